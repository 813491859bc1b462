// Keeps proto/ws.md, proto/asyncapi.yaml, the golden files and the code from
// drifting apart (issue 13):
//
//   node golden-frames.mjs ASYNCAPI.yaml TESTDATA_DIR
//
// 1. every golden file of TESTDATA_DIR validates against its schema (the
//    AsyncAPI message payloads and Envelope; the OpenAPI schemas for the
//    HTTP ones), and the refused example is refused; a golden file without a
//    schema here fails;
// 2. every JSON frame shown in proto/ws.md validates against the AsyncAPI
//    message of its type;
// 3. the frame types, error codes and close codes of ws.md's tables are in
//    the AsyncAPI document, and each of the document's is named in ws.md or
//    auth.md;
// 4. the gateway's code (services/gateway) sends only frame types, error
//    codes and close codes the document has, and dispatches only client
//    frame types it has; every HR_STREAM_* / HR_CHANNEL_* of proto/hr_proto.h
//    is one of its channels.
// Exit 0 when all hold, 1 with one line per problem.
import fs from "node:fs";
import path from "node:path";
import * as yaml from "js-yaml";
import AjvModule from "ajv";
import addFormatsModule from "ajv-formats";

const Ajv = AjvModule.default || AjvModule;
const addFormats = addFormatsModule.default || addFormatsModule;

const [asyncFile, testdata] = process.argv.slice(2);
if (!asyncFile || !testdata) {
  console.error("usage: node golden-frames.mjs ASYNCAPI.yaml TESTDATA_DIR");
  process.exit(2);
}
const proto = path.dirname(path.resolve(asyncFile));
const root = path.dirname(proto);
const read = (p) => fs.readFileSync(p, "utf8");
const problems = [];
let checked = 0;
const fail = (m) => problems.push(m);

const asyncDoc = yaml.load(read(asyncFile));
const openDoc = yaml.load(read(path.join(proto, "openapi.yaml")));
const ajv = new Ajv({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema(asyncDoc, "asyncapi");
ajv.addSchema(openDoc, "openapi");
const compiled = {};
function validator(ref) {
  if (!compiled[ref]) compiled[ref] = ajv.compile({ $ref: ref });
  return compiled[ref];
}
function validate(ref, value, what, expectValid = true) {
  checked++;
  const v = validator(ref);
  const ok = v(value);
  if (ok && !expectValid) fail(`${what}: valid against ${ref}, but it is the refused example`);
  if (!ok && expectValid) fail(`${what}: not valid against ${ref}: ${ajv.errorsText(v.errors)}`);
}

// The WebSocket messages by direction, keyed by their `type` const.
const msgs = asyncDoc.components.messages;
const refName = (r) => r.$ref.split("/").pop();
function typesOf(opName) {
  const out = {};
  for (const r of asyncDoc.operations[opName].messages) {
    const name = refName(r);
    const t = msgs[name].payload.properties && msgs[name].payload.properties.type;
    if (t && t.const) out[t.const] = `asyncapi#/components/messages/${name}/payload`;
  }
  return out;
}
const serverTypes = typesOf("sendToSocket");
const clientTypes = typesOf("receiveFromSocket");
const errorCodes = new Set(asyncDoc.components.schemas.ErrorCode.enum);
const closeCodes = new Set(asyncDoc.components.schemas.CloseCode.oneOf.map((c) => c.const));

// 1. golden files
const golden = {
  "envelope.json": ["asyncapi#/components/schemas/Envelope", true],
  "envelope_minimal.json": ["asyncapi#/components/schemas/Envelope", true],
  "frame_notification.json": [serverTypes.notification, true],
  "frame_refreshed.json": [serverTypes.refreshed, true],
  "frame_error_revoked.json": [serverTypes.error, true],
  "frame_error_token_expired.json": [serverTypes.error, true],
  "control_disconnect.json": ["asyncapi#/components/messages/disconnect/payload", true],
  "error_unauthorized_expired.json": ["openapi#/components/schemas/Error", true],
  "history_response.json": ["openapi#/components/schemas/NotificationList", true],
  "error_missing_field.json": ["openapi#/components/schemas/Error", true],
  "notification_request_full.json": ["openapi#/components/schemas/NotificationRequest", true],
  "notification_request_minimal.json": ["openapi#/components/schemas/NotificationRequest", true],
  "notification_request_missing_user_id.json": ["openapi#/components/schemas/NotificationRequest", false],
};
for (const f of fs.readdirSync(testdata).sort()) {
  if (!f.endsWith(".json")) continue;
  const g = golden[f];
  if (!g) {
    fail(`proto/testdata/${f}: no schema for this golden file in tests/contract/golden-frames.mjs`);
    continue;
  }
  validate(g[0], JSON.parse(read(path.join(testdata, f))), `proto/testdata/${f}`, g[1]);
}
for (const f of Object.keys(golden))
  if (!fs.existsSync(path.join(testdata, f))) fail(`proto/testdata/${f} is missing`);
const frame = JSON.parse(read(path.join(testdata, "frame_notification.json")));
const env = JSON.parse(read(path.join(testdata, "envelope.json")));
if (JSON.stringify(frame.notification) !== JSON.stringify(env))
  fail("frame_notification.json does not carry envelope.json");

// 2. the frames shown in ws.md
const wsText = read(path.join(proto, "ws.md"));
const authText = read(path.join(proto, "auth.md"));
for (const m of wsText.matchAll(/```json\n([\s\S]*?)```/g)) {
  let frames;
  try {
    frames = [JSON.parse(m[1])];
  } catch {
    frames = m[1].split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  }
  for (const f of frames) {
    const ref = serverTypes[f.type] || clientTypes[f.type];
    if (!ref) fail(`ws.md shows a frame of type ${f.type}, which asyncapi.yaml has no message for`);
    else validate(ref, f, `ws.md frame ${JSON.stringify(f).slice(0, 60)}`);
  }
}

// 3. ws.md's tables <-> the document
function tableFirstColumn(text, heading) {
  const start = text.indexOf(heading);
  if (start < 0) {
    fail(`ws.md has no section "${heading}"`);
    return [];
  }
  const rows = [];
  let inTable = false;
  for (const line of text.slice(start + heading.length).split("\n")) {
    if (line.startsWith("|")) {
      inTable = true;
      const m = line.match(/^\|\s*`?([^`|]+?)`?\s*\|/);
      if (m && !/^-+$/.test(m[1]) && !["type", "error `code`", "close code"].includes(m[1].trim())) rows.push(m[1].trim());
    } else if (inTable) break;
  }
  return rows;
}
const errHeading = "## Errors and close codes";
const errStart = wsText.indexOf(errHeading);
const wsServer = tableFirstColumn(wsText, "## Server → client");
const wsClient = tableFirstColumn(wsText, "## Client → server");
const wsErrors = tableFirstColumn(wsText, errHeading);
const afterErrors = wsText.slice(errStart).split("\n| close code |")[1] || "";
const wsCloses = [...afterErrors.split("\n\n")[0].matchAll(/^\|\s*(\d{4})\s*\|/gm)].map((m) => Number(m[1]));
const missing = (list, set, what) => list.filter((x) => !(x in set || (set.has && set.has(x)))).forEach((x) =>
  fail(`ws.md lists ${what} ${x}, which asyncapi.yaml lacks`));
missing(wsServer, serverTypes, "the server frame");
missing(wsClient, clientTypes, "the client frame");
missing(wsErrors, errorCodes, "the error code");
missing(wsCloses, closeCodes, "the close code");
const contractText = wsText + "\n" + authText;
const named = (word) => contractText.includes("`" + word + "`") || contractText.includes(`"type":"${word}"`) ||
  contractText.includes(`**${word}**`);
for (const t of [...Object.keys(serverTypes), ...Object.keys(clientTypes), ...errorCodes])
  if (!named(t)) fail(`asyncapi.yaml has ${t}, which neither ws.md nor auth.md names`);
for (const c of closeCodes) if (!named(String(c)) && !contractText.includes(`| ${c} |`))
  fail(`asyncapi.yaml has the close code ${c}, which neither ws.md nor auth.md names`);

// 4. the code
const gwDir = path.join(root, "services", "gateway");
const gwSrc = fs.readdirSync(gwDir).filter((f) => /\.[ch]$/.test(f)).map((f) => read(path.join(gwDir, f))).join("\n");
for (const m of gwSrc.matchAll(/_send_error\([^;]*?"([a-z_]+)"/g))
  if (!errorCodes.has(m[1])) fail(`the gateway sends the error code ${m[1]}, which asyncapi.yaml lacks`);
const sent = new Set([...gwSrc.matchAll(/"type",\s*"([a-z_]+)"/g), ...gwSrc.matchAll(/\\"type\\":\\"([a-z_]+)\\"/g)].map((m) => m[1]));
// The gateway's source also names the orders it reads from Redis (herald:control).
const redisTypes = new Set(Object.values(msgs).map((m) => m.payload && m.payload.properties &&
  m.payload.properties.type && m.payload.properties.type.const).filter(Boolean));
for (const t of sent) if (!(t in serverTypes) && !(redisTypes.has(t) && !(t in clientTypes)))
  fail(`the gateway writes frames of type ${t}, which asyncapi.yaml lacks`);
for (const m of gwSrc.matchAll(/strcmp\(type,\s*"([a-z_]+)"\)/g))
  if (!(m[1] in clientTypes)) fail(`the gateway takes client frames of type ${m[1]}, which asyncapi.yaml lacks`);
for (const m of gwSrc.matchAll(/#define (GW_CLOSE_\w+) (\d+)/g)) {
  const uses = gwSrc.split(m[1]).length - 2;
  if (uses > 0 && !closeCodes.has(Number(m[2]))) fail(`the gateway closes with ${m[2]} (${m[1]}), which asyncapi.yaml lacks`);
}
if (sent.size === 0) fail("found no frame types in services/gateway: the patterns of golden-frames.mjs are out of date");
const addrs = Object.values(asyncDoc.channels).map((c) => c.address);
const hdr = read(path.join(proto, "hr_proto.h"));
for (const m of hdr.matchAll(/#define (HR_(?:STREAM|CHANNEL)_\w+) "([^"]+)"/g)) {
  const ok = m[1].endsWith("_PREFIX") ? addrs.some((a) => a.startsWith(m[2] + "{")) : addrs.includes(m[2]);
  if (!ok) fail(`proto/hr_proto.h ${m[1]} = "${m[2]}" is not a channel of asyncapi.yaml`);
}

for (const p of problems) console.log(`PROBLEM ${p}`);
console.log(`# ${checked} documents validated; ${Object.keys(serverTypes).length} server and ` +
  `${Object.keys(clientTypes).length} client frame types, ${errorCodes.size} error codes, ${closeCodes.size} close codes ` +
  `checked against ws.md, auth.md and services/gateway: ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
