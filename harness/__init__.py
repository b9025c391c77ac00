"""Test and benchmark harness: starting and stopping the real processes (gunicorn, FastChat's controller,
simulated workers, nginx) and reading what they send. Used by the e2e, interop and reliability tiers and by the
benchmark; never imported by the app."""
