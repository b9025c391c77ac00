"""FastChat's own prompt rendering as a test oracle: runs fastchat_oracle.py inside a FastChat virtualenv."""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

CONVERSATIONS = {
    "single-turn": [{"role": "user", "content": "Hi"}],
    "multi-turn": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                   {"role": "user", "content": "How are you?"}],
    "system": [{"role": "system", "content": "You are X."}, {"role": "user", "content": "Hi"},
               {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "How are you?"}],
}
SCRIPT = Path(__file__).with_name("fastchat_oracle.py")


def fastchat_renderings(venv: Path) -> dict[str, dict]:
    """Template name -> {"wire": the template as a worker sends it, "prompts": {case: FastChat's prompt}}."""
    with tempfile.TemporaryDirectory() as folder:
        conversations = Path(folder) / "conversations.json"
        conversations.write_text(json.dumps(CONVERSATIONS))
        result = subprocess.run([str(venv / "bin" / "python"), str(SCRIPT), str(conversations)],
                                capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return {entry["name"]: entry for entry in json.loads(result.stdout)}
