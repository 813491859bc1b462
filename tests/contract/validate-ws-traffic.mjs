// Checks the WebSocket frames recorded in the integration tests against
// proto/asyncapi.yaml, with Ajv (the HTTP half is validate-traffic.mjs):
//
//   node validate-ws-traffic.mjs ASYNCAPI.yaml FILE_OR_DIR...
//
// Each FILE (a DIR: its *.jsonl) holds one frame per line, as
// tests/integration/herald_contract_log.py writes them (herald_ws.WsClient
// records every frame it reads from a gateway and writes to one). The
// messages come from the document: the operations on the gateway's `ws`
// channel, `send` ones for what the gateway writes, `receive` ones for what
// it reads; a message whose payload has a `type` const is a JSON text frame,
// the one without (`close`) is the close frame. Exit 0 when every frame is
// one the contract allows, 1 with one line per violation:
//   * a frame from the gateway is an unmasked, unfragmented UTF-8 text frame
//     holding one JSON object whose `type` names exactly one server message,
//     and the object validates against that message's payload (required
//     fields, types, unknown fields, error codes, ...);
//   * a close frame the gateway starts carries a status code of `CloseCode`
//     (the answer to the client's own close may echo the client's code); a
//     code whose description says "after `error` `X`" follows that error,
//     and such an error followed by a close is followed by that code;
//   * a `ref` in a gateway frame echoes one of an earlier client frame on the
//     connection (an answer's: of a frame it answers, `joined` for `join`,
//     ..., proto/ws.md "Client → server");
//   * a client frame the gateway answered as accepted (that reply) is one the
//     contract allows.
// Client frames the gateway refused or did not answer are counted, not judged:
// the tests send malformed ones on purpose; so are the frames a test PUBLISHed
// on a herald:* channel itself ("injected"), which a gateway forwards unread.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as yaml from "js-yaml";
import AjvModule from "ajv";
import addFormatsModule from "ajv-formats";

const Ajv = AjvModule.default || AjvModule;
const addFormats = addFormatsModule.default || addFormatsModule;

// proto/ws.md "Client → server": the answer that says a client frame was accepted.
const ANSWERS = { join: "joined", leave: "left", publish: "message", presence: "presence", ping: "pong",
  refresh: "refreshed" };

function pointer(doc, ref) {
  if (!ref.startsWith("#/")) throw new Error(`only local $refs are supported: ${ref}`);
  let v = doc;
  for (const part of ref.slice(2).split("/")) {
    v = v[part.replace(/~1/g, "/").replace(/~0/g, "~")];
    if (v === undefined) throw new Error(`unresolvable $ref ${ref}`);
  }
  return v;
}

/* The pointer a chain of $refs ends at. */
function finalRef(doc, ref) {
  for (let i = 0; i < 16; i++) {
    const v = pointer(doc, ref);
    if (!v || typeof v.$ref !== "string") return ref;
    ref = v.$ref;
  }
  throw new Error(`$ref loop at ${ref}`);
}

const short = (v) => {
  const s = JSON.stringify(v);
  return s === undefined ? "undefined" : s.length > 80 ? s.slice(0, 77) + "..." : s;
};

function at(obj, instancePath) {
  let v = obj;
  for (const p of instancePath.split("/").slice(1)) v = v == null ? undefined : v[p.replace(/~1/g, "/").replace(/~0/g, "~")];
  return v;
}

/* Ajv's errors as sentences naming the field, its value and what is allowed;
   the branches of a failed oneOf become one line listing what would do. */
export function describeErrors(errors, value, what) {
  const out = [];
  const oneOfs = errors.filter((e) => e.keyword === "oneOf" || e.keyword === "anyOf");
  const inBranch = (e) => oneOfs.some((o) => o !== e && e.schemaPath.startsWith(o.schemaPath.replace(/\/(oneOf|anyOf)$/, "/$1/")));
  for (const o of oneOfs) {
    if (inBranch(o)) continue;
    const prefix = o.schemaPath.replace(/\/(oneOf|anyOf)$/, "/$1/");
    const alts = [];
    for (const e of errors) {
      if (!e.schemaPath.startsWith(prefix) || e.instancePath !== o.instancePath) continue;
      if (e.keyword === "const") alts.push(short(e.params.allowedValue));
      else if (e.keyword === "type") alts.push(`a ${e.params.type}`);
      else if (e.keyword === "enum") alts.push(`one of ${e.params.allowedValues.join(", ")}`);
      else if (e.keyword === "pattern") alts.push(`a string matching ${e.params.pattern}`);
      else if (e.keyword === "required") alts.push(`with ${e.params.missingProperty}`);
    }
    const v = at(value, o.instancePath);
    out.push(`${what}${o.instancePath} ${short(v)} is none of the allowed ${alts.length ? alts.join(" | ") : "schemas"}`);
  }
  for (const e of errors) {
    if (oneOfs.includes(e) || inBranch(e)) continue;
    const p = `${what}${e.instancePath}`;
    if (e.keyword === "additionalProperties") out.push(`${p} has the undocumented field ${short(e.params.additionalProperty)}`);
    else if (e.keyword === "required") out.push(`${p} lacks the required field ${short(e.params.missingProperty)}`);
    else if (e.keyword === "enum")
      out.push(`${p} ${short(at(value, e.instancePath))} is not documented (allowed: ${e.params.allowedValues.join(", ")})`);
    else out.push(`${p} ${short(at(value, e.instancePath))} ${e.message}`);
  }
  return out;
}

export class WsContract {
  /* Loads the document and compiles the payload schema of every message on the gateway's socket. */
  constructor(file) {
    const doc = yaml.load(fs.readFileSync(file, "utf8"));
    this.doc = doc;
    this.ajv = new Ajv({ strict: false, allErrors: true });
    addFormats(this.ajv);
    this.ajv.addSchema(doc, "asyncapi");
    const socketChannels = Object.entries(doc.channels || {}).filter(([, ch]) =>
      (ch.servers || []).some((s) => pointer(doc, s.$ref).protocol === "ws")).map(([n]) => `#/channels/${n}`);
    if (socketChannels.length === 0) throw new Error(`${file}: no channel on a ws server`);
    this.server = { byType: {}, close: null, names: [] };
    this.client = { byType: {}, close: null, names: [] };
    for (const [opName, op] of Object.entries(doc.operations || {})) {
      if (!socketChannels.includes(op.channel.$ref)) continue;
      const side = op.action === "send" ? this.server : this.client;
      for (const m of op.messages || []) {
        const ref = finalRef(doc, m.$ref);
        const msg = pointer(doc, ref);
        const payload = msg.payload.$ref ? pointer(doc, finalRef(doc, msg.payload.$ref)) : msg.payload;
        const entry = { name: ref.split("/").pop(), op: opName, validate: this.ajv.compile({ $ref: `asyncapi${ref}/payload` }) };
        const t = payload.properties && payload.properties.type;
        if (t && "const" in t) {
          (side.byType[t.const] = side.byType[t.const] || []).push(entry);
          side.names.push(t.const);
        } else if (payload.properties && payload.properties.code) {
          side.close = entry;
        } else {
          throw new Error(`${ref}: a socket message needs a type const (a JSON frame) or a code (the close frame)`);
        }
      }
    }
    // "after `error` `token_expired`" in a CloseCode's description: the error that precedes it.
    this.closeAfter = {};
    this.closeCodes = [];
    const cc = doc.components && doc.components.schemas && doc.components.schemas.CloseCode;
    for (const alt of (cc && cc.oneOf) || []) {
      this.closeCodes.push(alt.const);
      const m = /after `error` `([a-z_]+)`/.exec(alt.description || "");
      if (m) this.closeAfter[alt.const] = m[1];
    }
    this.errorBefore = Object.fromEntries(Object.entries(this.closeAfter).map(([c, e]) => [e, Number(c)]));
  }

  /* The server message a JSON value is, as {entry} or {violations}. */
  classify(side, v, who) {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return { violations: [`${who} frame is not a JSON object`] };
    if (!("type" in v)) return { violations: [`${who} frame has no "type"`] };
    const entries = side.byType[v.type] || [];
    if (entries.length === 0)
      return { violations: [`${who} frame of the unknown type ${short(v.type)} (the contract's: ${side.names.join(", ")})`] };
    const fits = entries.filter((e) => e.validate(v));
    if (fits.length === 1) return { entry: fits[0] };
    if (fits.length > 1)
      return { violations: [`${who} frame matches ${fits.length} messages (${fits.map((e) => e.name).join(", ")}): the contract is ambiguous`] };
    const out = [];
    for (const e of entries) {
      e.validate(v);
      out.push(...describeErrors(e.validate.errors, v, `${e.name}: payload`));
    }
    return { violations: out, entry: entries.length === 1 ? entries[0] : null };
  }

  /* A text frame's JSON, or a violation. */
  static json(rec, who) {
    if (rec.payload === null || rec.payload === undefined) return { skip: true };
    if (rec.payload.base64 !== undefined) return { violations: [`${who} text frame is not UTF-8`] };
    try {
      return { value: JSON.parse(rec.payload.text) };
    } catch (e) {
      return { violations: [`${who} frame is not JSON: ${short(rec.payload.text)}`] };
    }
  }

  /* Violations (strings) of every record, one connection at a time, in order; rec.violations gets each record's. */
  check(recs) {
    const conns = new Map();
    for (const r of recs) {
      if (!r.rec) continue;
      const k = `${r.file}\u0000${r.rec.conn}`;
      if (!conns.has(k)) conns.set(k, []);
      conns.get(k).push(r);
    }
    this.stats = { server: 0, client: 0, conns: conns.size, types: {}, answered: 0, injected: 0, errorCodes: {} };
    for (const frames of conns.values()) {
      frames.sort((a, b) => a.rec.seq - b.rec.seq);
      let clientClose = null; // the client's close frame, once sent
      let lastServerJson = null; // the last JSON frame from the gateway
      let pendingError = null; // an error that announces a close code
      const sent = []; // client JSON frames: {value, violations}
      let opaque = false; // a client frame the record does not hold whole (a fragment, an oversized one)
      for (const r of frames) {
        const rec = r.rec;
        const v = (r.violations = r.violations || []);
        const fromServer = rec.from === "server";
        const who = fromServer ? "the gateway's" : "the client's";
        if (fromServer) this.stats.server++;
        else this.stats.client++;
        if (rec.close) {
          const key = `${fromServer ? "server" : "client"} close ${rec.close.code}`;
          this.stats.types[key] = (this.stats.types[key] || 0) + 1;
          if (!fromServer) {
            clientClose = clientClose || rec.close;
            continue;
          }
          if (rec.close.malformed) v.push("the gateway's close frame has a 1-byte payload");
          const echo = clientClose && rec.close.code === clientClose.code;
          if (!echo) {
            const side = this.server.close;
            const value = { code: rec.close.code, reason: rec.close.reason };
            const what = clientClose ? `the gateway's answer to the client's close ${clientClose.code}` : "the gateway's close";
            if (rec.close.code === 1005) v.push(`${what} carries no status code`);
            else if (!this.closeCodes.includes(rec.close.code))
              v.push(`${what} has the undocumented code ${rec.close.code} (CloseCode: ${this.closeCodes.join(", ")})`);
            else if (!side.validate(value)) v.push(...describeErrors(side.validate.errors, value, `close: ${what}`));
          }
          const want = this.closeAfter[rec.close.code];
          if (want && !clientClose && !(lastServerJson && lastServerJson.type === "error" && lastServerJson.code === want))
            v.push(`close ${rec.close.code} is not preceded by the error ${want} (the last JSON frame before it: ${lastServerJson ? short(lastServerJson) : "none"})`);
          if (pendingError && rec.close.code !== this.errorBefore[pendingError] && !clientClose)
            v.push(`the error ${pendingError} is followed by close ${rec.close.code}, not ${this.errorBefore[pendingError]}`);
          continue;
        }
        if (rec.opcode !== 1 && rec.opcode !== 0 && rec.opcode !== 2) {
          if (fromServer) v.push(`the gateway sent a frame with the opcode ${rec.opcode}`);
          continue;
        }
        if (!fromServer) {
          if (rec.opcode === 0 || rec.fin === false || (rec.opcode === 1 && !rec.payload)) opaque = true;
          if (rec.opcode !== 1 || rec.fin === false) continue; // binary or fragmented: a test of the refusal
          const j = WsContract.json(rec, who);
          if (j.skip) continue;
          const c = j.value === undefined ? { violations: j.violations } : this.classify(this.client, j.value, who);
          sent.push({ value: j.value, violations: c.violations || [], r });
          continue;
        }
        if (rec.injected) {
          this.stats.injected++; // the test's own PUBLISH, forwarded byte for byte
          continue;
        }
        if (rec.masked) v.push("the gateway sent a masked frame (RFC 6455 5.1)");
        if (rec.opcode === 2) {
          v.push("the gateway sent a binary frame; the contract's frames are JSON text");
          continue;
        }
        if (rec.opcode === 0 || rec.fin === false) {
          v.push("the gateway sent a fragmented message; the contract's frames are one JSON object per frame");
          continue;
        }
        const j = WsContract.json(rec, who);
        if (j.violations) {
          v.push(...j.violations);
          continue;
        }
        const val = j.value;
        lastServerJson = val;
        const c = this.classify(this.server, val, who);
        v.push(...(c.violations || []));
        const t = val && typeof val === "object" && typeof val.type === "string" ? val.type : "(no type)";
        this.stats.types[t] = (this.stats.types[t] || 0) + 1;
        if (val && val.type === "error") this.stats.errorCodes[val.code] = (this.stats.errorCodes[val.code] || 0) + 1;
        if (val && val.type === "error" && val.code in this.errorBefore) pendingError = val.code;
        // A ref is the echo of a client frame's: an error's of any, an answer's of one it answers.
        // An answer that accepts a client frame: that frame must be one the contract allows.
        if (val && typeof val === "object" && val.ref !== undefined) {
          const same = sent.filter((s) => s.value && typeof s.value === "object" &&
            JSON.stringify(s.value.ref) === JSON.stringify(val.ref));
          const asked = val.type === "error" ? null : same.reverse().find((s) => ANSWERS[s.value.type] === val.type);
          if (same.length === 0 && !opaque)
            v.push(`the gateway's ${short(val.type)} carries the ref ${short(val.ref)}, which no earlier client frame on this connection sent`);
          else if (val.type !== "error" && !asked && !opaque)
            v.push(`the gateway's ${short(val.type)} carries the ref ${short(val.ref)} of the client's ` +
              `${[...new Set(same.map((s) => short(s.value.type)))].join(", ")}, which ${short(val.type)} does not answer`);
          if (asked) {
            this.stats.answered++;
            for (const msg of asked.violations)
              v.push(`the gateway accepted (answered ${val.type}) the client's frame #${asked.r.rec.seq} ` +
                `${short(asked.value)} that the contract refuses: ${msg}`);
          }
        }
      }
    }
    return recs;
  }
}

/* Every record of the given files and directories. */
export function readRecords(args) {
  const files = [];
  for (const a of args) {
    if (!fs.existsSync(a)) continue;
    if (fs.statSync(a).isDirectory()) {
      for (const f of fs.readdirSync(a).sort()) if (f.endsWith(".jsonl")) files.push(path.join(a, f));
    } else {
      files.push(a);
    }
  }
  const recs = [];
  for (const f of files) {
    fs.readFileSync(f, "utf8").split("\n").forEach((l, i) => {
      if (l.trim() === "") return;
      const where = `${path.basename(f)}:${i + 1}`;
      try {
        recs.push({ file: f, where, rec: JSON.parse(l) });
      } catch (e) {
        recs.push({ file: f, where, violations: [`unreadable record: ${e.message}`] });
      }
    });
  }
  return { files, recs };
}

function describeFrame(rec) {
  if (rec.close) return `close ${rec.close.code}${rec.close.reason ? " " + short(rec.close.reason) : ""}`;
  if (!rec.payload) return `opcode ${rec.opcode}, ${rec.length} bytes`;
  const t = rec.payload.text !== undefined ? rec.payload.text : `base64 ${rec.payload.base64}`;
  return t.length > 160 ? t.slice(0, 157) + "..." : t;
}

async function main(argv) {
  if (argv.length < 2) {
    console.error("usage: node validate-ws-traffic.mjs ASYNCAPI.yaml FILE_OR_DIR...");
    return 2;
  }
  const c = new WsContract(argv[0]);
  const { files, recs } = readRecords(argv.slice(1));
  c.check(recs);
  let bad = 0;
  for (const r of recs) {
    for (const msg of r.violations || []) {
      bad++;
      const rec = r.rec;
      const head = rec ? `[${rec.test}${rec.check ? " / " + rec.check : ""}] conn ${rec.conn} #${rec.seq} ` +
        `${rec.from === "server" ? "gateway -> client" : "client -> gateway"} ${describeFrame(rec)}` : "";
      console.log(`VIOLATION ${r.where} ${head}: ${msg}`);
    }
  }
  const s = c.stats;
  console.log(`# ${recs.length} frames (${s.server} from the gateway, ${s.injected} of them published by the ` +
    `test itself; ${s.client} from clients, ${s.answered} accepted ones judged) on ${s.conns} connections in ${files.length} files checked against ${argv[0]}: ${bad} violations`);
  for (const k of Object.keys(s.types).sort()) console.log(`#   ${k}: ${s.types[k]}`);
  // What the traffic did not exercise (information: the tests decide what they cover).
  const errorEnum = (c.doc.components.schemas.ErrorCode || {}).enum || [];
  const unseen = [
    ["types", c.server.names.filter((t) => !s.types[t])],
    ["error codes", errorEnum.filter((e) => !s.errorCodes[e])],
    ["close codes", c.closeCodes.filter((k) => !s.types[`server close ${k}`])],
  ].filter(([, l]) => l.length).map(([n, l]) => `${n} ${l.join(", ")}`);
  if (recs.length && unseen.length) console.log(`# documented, not seen from the gateway: ${unseen.join("; ")}`);
  // None (the tests run used no WebSocket) passes, as in validate-traffic.mjs;
  // contract_ws_traffic_selftest proves that the recording works.
  if (recs.length === 0) console.log("# no frames recorded");
  return bad ? 1 : 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (rc) => process.exit(rc),
    (e) => {
      console.error(e);
      process.exit(2);
    },
  );
}
