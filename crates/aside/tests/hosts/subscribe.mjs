// Legacy resource subscriptions (`resources/subscribe`, protocol 2025-06-18 / 2025-11-25) with
// the official TypeScript SDK, the client most hosts are built on. Run by tests/hosts.rs with
// ASIDE_BIN, ASIDE_HOME and ASIDE_HOSTS_NODE_MODULES set.
import fs from "node:fs";
import path from "node:path";

const nm = process.env.ASIDE_HOSTS_NODE_MODULES;
const sdk = (p) => import(path.join(nm, "@modelcontextprotocol/sdk/dist/esm", p));
const { Client } = await sdk("client/index.js");
const { StdioClientTransport } = await sdk("client/stdio.js");
const { ResourceUpdatedNotificationSchema } = await sdk("types.js");

function check(cond, what, detail = "") {
  if (!cond) {
    console.log(`FAILED: ${what}\n${detail}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

const transport = new StdioClientTransport({
  command: process.env.ASIDE_BIN,
  args: ["mcp", "--owner", "ts-agent"],
  env: { ...process.env },
  stderr: "inherit",
});
const client = new Client({ name: "ts-test", version: "1.0" });
await client.connect(transport);
check(client.getServerCapabilities()?.resources?.subscribe === true, "subscribe is advertised");

// Listing first makes the SDK validate every structured answer against its output schema.
const tools = await client.listTools();
check(tools.tools.some((t) => t.name === "run" && t.outputSchema), "tools with output schemas");

const gate = path.join(process.cwd(), "ts-gate");
const run = await client.callTool({
  name: "run",
  // A form-style client's strings: "true" is a boolean, "20000" a number.
  arguments: {
    command: `echo one; while [ ! -e ${gate} ]; do sleep 0.02; done; echo two`,
    run_in_background: "true",
    timeout_ms: "20000",
  },
});
check(!run.isError && run.structuredContent?.background === true, "run in the background", JSON.stringify(run));
const uri = `aside://runs/${run.structuredContent.id}`;

const updates = [];
let finished;
const done = new Promise((resolve) => (finished = resolve));
client.setNotificationHandler(ResourceUpdatedNotificationSchema, async (n) => {
  updates.push(n.params.uri);
  const body = await client.readResource({ uri });
  if (body.contents[0].text.includes('"complete":true')) finished(body.contents[0].text);
});
await client.subscribeResource({ uri });
fs.writeFileSync(gate, "");
let deadline;
const timer = new Promise((_, reject) => (deadline = setTimeout(() => reject(new Error("no end within 20 s")), 20000)));
const last = await Promise.race([done, timer]);
clearTimeout(deadline); // or node stays up until it fires
check(updates.length >= 1 && updates.every((u) => u === uri), "resources/updated as it writes and ends", JSON.stringify(updates));
check(last.includes('"status":"completed"'), "and a re-read shows it ended", last);
await client.unsubscribeResource({ uri });

let refused = false;
try {
  await client.subscribeResource({ uri: "aside://runs/no-such-process" });
} catch (e) {
  refused = String(e).includes("no process");
}
check(refused, "subscribing to an unknown process is an error");

const list = await client.callTool({ name: "list", arguments: { include_team: "false" } });
check(!list.isError, "string booleans are accepted", JSON.stringify(list));
await client.close();
console.log("legacy subscribe checks passed");
