"""Images in chat requests: what a loaded image part is (parts), the operator's limits (rules), how image bytes
are checked (check) and the guarded fetcher of http(s) URLs (fetch).

No Flask here: the request schemas check data: URLs with it at validation time, the serving layer fetches.
"""
