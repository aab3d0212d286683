#!/usr/bin/env python3
"""A scripted stand-in for three model APIs, for driving real agent hosts through whole turns.

Serves on 127.0.0.1 (port 0: the kernel picks; the port is written to --port-file):
- Anthropic Messages (`POST /v1/messages`, streaming or not) for Claude Code,
- OpenAI Responses (`POST /v1/responses`, streaming) for Codex CLI,
- Gemini (`POST /v1beta/models/M:streamGenerateContent` / `:generateContent`) for Gemini CLI.

Every request is appended to --log as one JSON line: {"n", "api", "path", "body", "turn"}. A
request that offers tools is a *turn* of the agent loop and gets the next step of the plan; side
requests (titles, token counts, next-speaker checks) get a neutral answer and consume nothing.

The plan (--plan, JSON) is {"steps": [STEP, ...]} where STEP is one of
  {"tool": NAME, "args": {...}}   call the offered tool whose name is NAME or ends with
                                  "__NAME" / "_NAME" (hosts prefix MCP tools differently)
  {"text": "..."}                 answer with text and end the turn
When the plan is used up, every further turn is answered with {"text": "done"}. With
{"when": SUBSTRING} a step is used only once the request's body contains SUBSTRING; until then
the turn is answered with the step in "else" (default: text "waiting"). A step may also say
{"delay_ms": N} (answer after N ms) or {"status": CODE} (answer with that HTTP error instead,
e.g. 400, which hosts do not retry).

Only Python's standard library: the tests need nothing from PyPI for this.
"""

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"n": 0, "step": 0}


def pick_tool(offered, name):
    for t in offered:
        if t == name or t.endswith("__" + name) or t.endswith("_" + name):
            return t
    return None


def next_step(plan, body_text):
    """The step that answers a turn (under LOCK)."""
    steps = plan.get("steps", [])
    i = STATE["step"]
    if i >= len(steps):
        return {"text": "done"}
    step = steps[i]
    when = step.get("when")
    if when is not None and when not in body_text:
        return step.get("else", {"text": "waiting"})
    STATE["step"] = i + 1
    return step


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    plan = {}
    log_path = ""

    def log_message(self, *args):  # quiet: the log file is the record
        pass

    def refuse_or_delay(self, step):
        """Applies a step's delay; answers its error status. True when it answered."""
        if step.get("delay_ms"):
            time.sleep(step["delay_ms"] / 1000)
        code = step.get("status")
        if code:
            self.send_json({"type": "error", "error": {"type": "invalid_request_error",
                                                       "message": "standin: scripted failure"}},
                           code=code)
            return True
        return False

    def record(self, api, body, turn):
        with LOCK:
            STATE["n"] += 1
            entry = {"n": STATE["n"], "api": api, "path": self.path, "body": body, "turn": turn,
                     "t": time.time()}
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def read_body(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw or b"{}"), raw.decode("utf-8", "replace")
        except ValueError:
            return {"raw": raw.decode("utf-8", "replace")}, raw.decode("utf-8", "replace")

    def send_json(self, obj, code=200):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_sse(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

    def sse(self, event, data):
        if event:
            self.wfile.write(f"event: {event}\n".encode())
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        # Model listings and health checks some hosts make on start.
        if "models" in self.path:
            self.send_json({"data": [], "models": [], "object": "list"})
        else:
            self.send_json({})

    def do_POST(self):
        body, text = self.read_body()
        path = self.path.split("?")[0]
        if path.endswith("/v1/messages/count_tokens"):
            self.record("anthropic", body, False)
            return self.send_json({"input_tokens": 10})
        if path.endswith("/v1/messages"):
            return self.anthropic(body, text)
        if path.endswith("/responses"):
            return self.openai(body, text)
        if ":streamGenerateContent" in path or ":generateContent" in path:
            return self.gemini(body, text, ":streamGenerateContent" in path)
        if ":countTokens" in path:
            self.record("gemini", body, False)
            return self.send_json({"totalTokens": 10})
        self.record("other", body, False)
        self.send_json({})

    # Anthropic Messages -------------------------------------------------------------------
    def anthropic(self, body, text):
        offered = [t.get("name") for t in body.get("tools") or [] if t.get("name")]
        turn = bool(offered)
        self.record("anthropic", body, turn)
        step = {"text": "ok"}
        if turn:
            with LOCK:
                step = next_step(self.plan, text)
            if self.refuse_or_delay(step):
                return
        content = []
        stop = "end_turn"
        if "tool" in step:
            name = pick_tool(offered, step["tool"])
            if name is None:
                content.append({"type": "text", "text": f"standin: no tool {step['tool']}"})
            else:
                content.append({"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:20],
                                "name": name, "input": step.get("args", {})})
                stop = "tool_use"
        else:
            content.append({"type": "text", "text": step.get("text", "ok")})
        msg_id = "msg_" + uuid.uuid4().hex[:20]
        usage = {"input_tokens": 10, "output_tokens": 5}
        model = body.get("model", "standin")
        if not body.get("stream"):
            return self.send_json({"id": msg_id, "type": "message", "role": "assistant",
                                   "model": model, "content": content, "stop_reason": stop,
                                   "stop_sequence": None, "usage": usage})
        self.start_sse()
        self.sse("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}})
        for i, block in enumerate(content):
            if block["type"] == "text":
                self.sse("content_block_start", {"type": "content_block_start", "index": i,
                                                 "content_block": {"type": "text", "text": ""}})
                self.sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                 "delta": {"type": "text_delta",
                                                           "text": block["text"]}})
            else:
                self.sse("content_block_start", {"type": "content_block_start", "index": i,
                                                 "content_block": {**block, "input": {}}})
                self.sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                 "delta": {"type": "input_json_delta",
                                                           "partial_json": json.dumps(
                                                               block["input"])}})
            self.sse("content_block_stop", {"type": "content_block_stop", "index": i})
        self.sse("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": stop, "stop_sequence": None},
                                   "usage": {"output_tokens": 5}})
        self.sse("message_stop", {"type": "message_stop"})

    # OpenAI Responses ---------------------------------------------------------------------
    def openai(self, body, text):
        offered, namespace = [], {}
        for t in body.get("tools") or []:
            if t.get("type") == "function" and t.get("name"):
                offered.append(t["name"])
            elif t.get("type") == "namespace":
                # Codex groups an MCP server's tools: a call names the namespace and the tool.
                for inner in t.get("tools") or []:
                    if inner.get("name"):
                        full = t["name"] + "__" + inner["name"]
                        offered.append(full)
                        namespace[full] = (t["name"], inner["name"])
        turn = bool(offered)
        self.record("openai", body, turn)
        step = {"text": "ok"}
        if turn:
            with LOCK:
                step = next_step(self.plan, text)
            if self.refuse_or_delay(step):
                return
        resp_id = "resp_" + uuid.uuid4().hex[:20]
        if "tool" in step and pick_tool(offered, step["tool"]):
            name = pick_tool(offered, step["tool"])
            item = {"type": "function_call", "id": "fc_" + uuid.uuid4().hex[:20],
                    "call_id": "call_" + uuid.uuid4().hex[:20], "name": name,
                    "arguments": json.dumps(step.get("args", {})), "status": "completed"}
            if name in namespace:
                item["namespace"], item["name"] = namespace[name]
        else:
            said = step.get("text", f"standin: no tool {step.get('tool')}")
            item = {"type": "message", "id": "msg_" + uuid.uuid4().hex[:20], "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": said, "annotations": []}]}
        response = {"id": resp_id, "object": "response", "status": "completed",
                    "model": body.get("model", "standin"), "output": [item],
                    "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                              "input_tokens_details": {"cached_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 0}}}
        self.start_sse()
        self.sse("response.created", {"type": "response.created",
                                      "response": {**response, "status": "in_progress",
                                                   "output": []}})
        self.sse("response.output_item.added", {"type": "response.output_item.added",
                                                "output_index": 0, "item": item})
        self.sse("response.output_item.done", {"type": "response.output_item.done",
                                               "output_index": 0, "item": item})
        self.sse("response.completed", {"type": "response.completed", "response": response})

    # Gemini -------------------------------------------------------------------------------
    def gemini(self, body, text, stream):
        offered = []
        for t in body.get("tools") or []:
            for d in t.get("functionDeclarations") or []:
                if d.get("name"):
                    offered.append(d["name"])
        turn = bool(offered)
        self.record("gemini", body, turn)
        gen = body.get("generationConfig") or body.get("config") or {}
        if not turn:
            if gen.get("responseMimeType") == "application/json" or gen.get("responseJsonSchema") \
                    or gen.get("responseSchema"):
                # The next-speaker check and similar side questions: the user speaks next.
                part = {"text": json.dumps({"reasoning": "standin", "next_speaker": "user",
                                            "complexity_reasoning": "standin",
                                            "complexity_score": 1, "model_choice": "flash",
                                            "reasoning_effort": "low"})}
            else:
                part = {"text": "ok"}
        else:
            with LOCK:
                step = next_step(self.plan, text)
            if self.refuse_or_delay(step):
                return
            name = pick_tool(offered, step["tool"]) if "tool" in step else None
            if name:
                part = {"functionCall": {"name": name, "args": step.get("args", {})}}
            else:
                part = {"text": step.get("text", f"standin: no tool {step.get('tool')}")}
        chunk = {"candidates": [{"content": {"role": "model", "parts": [part]},
                                 "finishReason": "STOP", "index": 0}],
                 "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                                   "totalTokenCount": 15},
                 "modelVersion": "standin"}
        if not stream:
            return self.send_json(chunk)
        self.start_sse()
        self.sse(None, chunk)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--port-file", required=True)
    a = ap.parse_args()
    with open(a.plan, encoding="utf-8") as f:
        Handler.plan = json.load(f)
    Handler.log_path = a.log
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = a.port_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(tmp, a.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
