"""Open an HTML file in headless Chromium over the DevTools protocol and report what
rendered: sections, images, console errors, exceptions, network requests, dialogs,
and a screenshot.

The protocol runs over ``--remote-debugging-pipe`` (the browser reads commands on its
fd 3 and writes replies and events on fd 4, each message JSON ending in a NUL byte),
so no port, websocket library or network is needed.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

#: Flags that keep Chromium offline and quiet in CI containers.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe")
#: Hang protection for one protocol reply (not a performance limit).
REPLY_SECONDS = 300

#: Runs in the page after load: section ids, headings, and each image's state.
INSPECT = """JSON.stringify({
  sections: [...document.querySelectorAll("section")].map(s => ({
    id: s.id, heading: (s.querySelector("h2") || {}).textContent || "",
    visible: s.getBoundingClientRect().height > 0})),
  images: [...document.images].map(i => ({
    alt: i.alt, ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth})),
  scripts: document.scripts.length,
  text: document.body.innerText.length
})"""


def chromium() -> str | None:
    """The Chromium binary on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageCheck:
    """What a page showed in the browser."""

    sections: list[dict]
    images: list[dict]
    errors: list[str]
    requests: list[str]
    dialogs: list[str]
    scripts: int
    screenshot: bytes = field(repr=False)

    @property
    def broken_images(self) -> list[str]:
        return [image["alt"] for image in self.images if not image["ok"]]

    def problems(self) -> list[str]:
        """Everything that is wrong, in words; empty for a clean page."""
        return ([f"image not rendered: {alt!r}" for alt in self.broken_images]
                + [f"console error: {e}" for e in self.errors]
                + [f"network request: {u}" for u in self.requests]
                + [f"dialog: {d}" for d in self.dialogs])


class _Pipe:
    def __init__(self, binary: str, user_dir: str):
        cmd_read, self._cmd_write = os.pipe()
        self._out_read, out_write = os.pipe()

        def to_fds_3_and_4():  # in the child: the pipes become fds 3 and 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_read, out_write)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={user_dir}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=to_fds_3_and_4, close_fds=False)
        os.close(cmd_read)
        os.close(out_write)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def _read(self):
        buffer = b""
        while chunk := os.read(self._out_read, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self.messages.put(json.loads(message))
        self.messages.put(None)

    def send(self, method: str, params: dict | None = None, session: str | None = None):
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.messages.get(timeout=REPLY_SECONDS)
            if reply is None:
                raise RuntimeError(f"chromium exited (status {self.process.poll()})")
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self.messages.get(timeout=REPLY_SECONDS)
            if event is None:
                raise RuntimeError("chromium exited")
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self):
        with contextlib.suppress(RuntimeError, queue.Empty, OSError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._cmd_write)


def _event_problems(events: list[dict]) -> tuple[list[str], list[str], list[str]]:
    errors, requests, dialogs = [], [], []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                   for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(details.get("exception", {}).get("description")
                          or details.get("text", "exception"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(("data:", "file:", "about:")):
                requests.append(url)
        elif method == "Page.javascriptDialogOpening":
            dialogs.append(params.get("message", ""))
    return errors, requests, dialogs


def check_page(path: Path, width: int = 1280, height: int = 1600,
               binary: str | None = None) -> PageCheck:
    """Load ``path`` in a fresh headless Chromium and report what rendered.

    A dialog (``alert``) is dismissed and recorded, so a script injected into the page
    shows up in ``dialogs`` instead of blocking the load.
    """
    binary = binary or chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed")
    user_dir = tempfile.mkdtemp(prefix="filterdb-chromium-")
    pipe = _Pipe(binary, user_dir)
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1,
                   "mobile": False}, session=session)
        pipe.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
        while True:  # a dialog blocks the load until it is answered
            event = pipe.messages.get(timeout=REPLY_SECONDS)
            if event is None:
                raise RuntimeError("chromium exited")
            pipe.events.append(event)
            if event.get("method") == "Page.javascriptDialogOpening":
                pipe.send("Page.handleJavaScriptDialog", {"accept": False}, session=session)
            elif event.get("method") == "Page.loadEventFired":
                break
        state = json.loads(pipe.send("Runtime.evaluate", {"expression": INSPECT,
                                                          "returnByValue": True},
                                     session=session)["result"]["value"])
        shot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session)
        errors, requests, dialogs = _event_problems(pipe.events)
        return PageCheck(sections=state["sections"], images=state["images"], errors=errors,
                         requests=requests, dialogs=dialogs, scripts=state["scripts"],
                         screenshot=base64.b64decode(shot["data"]))
    finally:
        pipe.close()
        shutil.rmtree(user_dir, ignore_errors=True)
