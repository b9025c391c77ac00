"""API keys with a policy: the key model (model.py), the key file and its checks (files.py), and the copy each
process keeps current as the file changes (store.py).

files.py and model.py stay cheap (standard library only): gunicorn's master reads the key file before it forks.
"""
