"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: commands
in on fd 3, replies and events out on fd 4, NUL-terminated JSON), so that tests can sign in through
a form and read cookies without any package beyond the standard library."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    return None


class Browser:
    def __init__(self, executable: str, width: int, height: int):
        commands_in, self._commands = os.pipe()
        self._replies, replies_out = os.pipe()

        def onto_fds_3_and_4():
            os.dup2(commands_in, 3)
            os.dup2(replies_out, 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--window-size={width},{height}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4), preexec_fn=onto_fds_3_and_4, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(commands_in)
        os.close(replies_out)
        self._next_id, self._buffer, self._events = 0, b"", []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        # The window's size includes the browser's own frame: the page gets exactly width × height.
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def send(self, method: str, *, session: bool = False, timeout: float = 60.0, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_for(self, event: str, timeout: float = 60.0) -> dict:
        for index, message in enumerate(self._events):
            if message.get("method") == event:
                return self._events.pop(index)
        while True:
            message = self._receive(timeout)
            if message.get("method") == event:
                return message
            self._events.append(message)

    def navigate(self, url: str) -> None:
        self._events.clear()
        self.send("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", session=True, format="png")["data"])

    def cookies(self) -> list[dict]:
        return self.send("Storage.getCookies")["cookies"]

    def _receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer within {timeout} s")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited: {self.process.stderr.read().decode()[-2000:]}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)
        self.process.stderr.close()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
