"""The Responses API (POST /v1/responses) served as a chat completion: the whole reply shaped as a response object
(reply.py) and a streamed one as the Responses event sequence (events.py)."""
