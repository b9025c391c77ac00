"""Tool calling over FastChat workers: tools rendered into the prompt, calls parsed back out of the text.

The worker's decoding cannot be constrained, so everything here is prompt text in and plain text out: a format
(hermes, llama3_json, mistral) says how tools, earlier calls and tool results are written into the messages that
app.serving.prompt then frames, and where in a reply a call starts and ends.
"""
