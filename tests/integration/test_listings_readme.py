"""The README's curl session, run against the API: its JSON bodies and paths are the API's,
so the README cannot rot. The session is the second `sh` block of README.md.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

README = Path(__file__).resolve().parents[2] / "README.md"
ADMIN_KEY = "hub_admin_test_key"  # the `client` fixture's admin key


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block, in order."""
    return re.findall(r"^```([^\n]*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def readme_curls() -> list[dict]:
    """The curl commands of the README's session (its second `sh` block), parsed."""
    sh = [body for info, body in fenced_blocks(README.read_text()) if info.strip() == "sh"]
    assert len(sh) >= 2, "README has no curl session"
    commands = []
    for raw in sh[1].replace("\\\n", " ").split("\ncurl ")[1:]:
        text = "curl " + raw
        # the command ends where its quotes close and a new line starts
        args = shlex.split(text, comments=True)
        command: dict = {"method": "GET", "headers": {}, "body": None, "url": None}
        words = iter(args[1:])
        for word in words:
            if word == "-X":
                command["method"] = next(words)
            elif word == "-H":
                name, _, value = next(words).partition(":")
                command["headers"][name.strip()] = value.strip()
            elif word in ("-d", "--data"):
                command["body"] = next(words)
                if command["method"] == "GET":
                    command["method"] = "POST"
            elif word.startswith("-"):
                continue
            elif command["url"] is None and "localhost" in word:
                command["url"] = word
            else:
                break  # the next shell command
        commands.append(command)
    return commands


async def test_readme_curl_session_works(client):
    commands = readme_curls()
    assert [c["method"] for c in commands][:2] == ["POST", "POST"]
    keys = {"$ADMIN": ADMIN_KEY}
    answers = []
    for command in commands:
        path = urlsplit("http://" + command["url"].removeprefix("http://"))
        target = path.path + (f"?{path.query}" if path.query else "")
        headers = {}
        for name, raw in command["headers"].items():
            value = raw
            for variable, key in keys.items():
                value = value.replace(variable, key)
            assert "$" not in value, f"README uses {raw} before it is set"
            headers[name] = value
        response = await client.request(
            command["method"],
            target,
            content=command["body"].encode() if command["body"] else None,
            headers=headers | {"content-type": "application/json"},
        )
        assert response.status_code in (200, 201), (command, response.text)
        answers.append(response.json())
        if target == "/v1/agencies":
            assert response.status_code == 201
            keys["$KEY"] = response.json()["api_key"]
        elif target == "/v1/listings":
            assert response.status_code == 201
            assert response.json()["status"] == "effective"
            assert response.json()["position"] >= 1
    assert any(a.get("events") for a in answers), "the session reads the log"
    assert any(a.get("active") is not None for a in answers), "the session reads a subject"
