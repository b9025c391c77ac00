"""Models served by OpenAI-compatible base URLs beside the FastChat workers (ROUTES_FILE): configuration, relay,
start-up check."""
