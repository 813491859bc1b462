// Checks recorded HTTP exchanges with ingest and history against
// proto/openapi.yaml (issue 13), with openapi-backend's validator (Ajv):
//
//   node validate-traffic.mjs OPENAPI.yaml FILE_OR_DIR...
//
// Each FILE (a DIR: its *.jsonl) holds one exchange per line, as
// tests/integration/herald_contract_log.py writes them. Exit 0 when every
// exchange is one the contract allows, 1 with one line per violation:
//   * a (service, method, path) the contract does not list for that service
//     must be answered 404 not_found (unknown path) or 405
//     method_not_allowed / 501 not_implemented (known path, other method);
//     history answers OPTIONS on any path with its preflight;
//   * the status must be listed for the operation, or be one of the HTTP
//     layer's refusals (x-herald-framing-answers) with its error code;
//   * the Content-Type must be one the response lists, a JSON body must
//     validate against its schema (unknown fields, types, formats, enums)
//     and end with a newline; a response without content has no body, and a
//     HEAD answer never has one;
//   * a request answered 2xx must be one the contract allows (parameters,
//     headers, body);
//   * every response header must be HTTP framing, listed for the service in
//     x-herald-headers-on-every-answer, or listed for the response, and
//     match its schema.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { OpenAPIBackend } from "openapi-backend";
import AjvModule from "ajv";
const Ajv = AjvModule.default || AjvModule;
import addFormatsModule from "ajv-formats";
const addFormats = addFormatsModule.default || addFormatsModule;

const FRAMING = new Set(["content-type", "content-length", "date", "connection", "transfer-encoding"]);
const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/* The media type without parameters, lowercase. */
function essence(ct) {
  return (ct || "").split(";")[0].trim().toLowerCase();
}

function templateRegex(p) {
  return new RegExp("^" + p.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^}]+\}/g, "[^/]+") + "$");
}

export class Contract {
  /* Loads and dereferences the document; await ready() before check(). */
  constructor(file) {
    this.api = new OpenAPIBackend({
      definition: file,
      strict: true,
      quick: true,
      validate: true,
      lazyCompileValidators: true,
      customizeAjv: (ajv) => {
        addFormats(ajv);
        return ajv;
      },
    });
  }

  async ready() {
    await this.api.init();
    const doc = this.api.definition;
    this.doc = doc;
    // Operations per service (an operation's servers name the services that answer it).
    this.routes = [];
    for (const [p, item] of Object.entries(doc.paths)) {
      const re = templateRegex(p);
      const params = (p.match(/\{/g) || []).length;
      for (const m of METHODS) {
        const op = item[m];
        if (!op) continue;
        const servers = (op.servers || item.servers || doc.servers).map((s) => s.description);
        this.routes.push({ path: p, re, params, method: m, op, servers });
      }
    }
    // Literal paths before templated ones (/notifications/read-all before /notifications/{id}).
    this.routes.sort((a, b) => a.params - b.params);
    const ajv = new Ajv({ strict: false, coerceTypes: true, allErrors: true });
    addFormats(ajv);
    this.every = {};
    for (const [svc, headers] of Object.entries(doc["x-herald-headers-on-every-answer"] || {})) {
      this.every[svc] = {};
      for (const [name, h] of Object.entries(headers))
        this.every[svc][name.toLowerCase()] = ajv.compile({ type: "object", properties: { v: h.schema } });
    }
    this.errorSchema = new Ajv({ strict: false, allErrors: true });
    addFormats(this.errorSchema);
    this.validateError = this.errorSchema.compile({
      ...doc.components.schemas.Error,
    });
    return this;
  }

  /* The route for (service, method, path), or {pathKnown} when only the path is listed. */
  match(service, method, p) {
    let pathKnown = false;
    const m = method.toLowerCase() === "head" ? "get" : method.toLowerCase();
    for (const r of this.routes) {
      if (!r.servers.includes(service) || !r.re.test(p)) continue;
      pathKnown = true;
      if (r.method === m) return { route: r, pathKnown };
    }
    return { route: null, pathKnown };
  }

  /* The violations (strings) of one exchange; [] when it is allowed. */
  check(rec) {
    const out = [];
    const body = rec.response.body ? rec.response.body.text ?? Buffer.from(rec.response.body.base64, "base64").toString("latin1") : "";
    const headers = {};
    for (const [k, v] of rec.response.headers) {
      const n = k.toLowerCase();
      if (n in headers) out.push(`header ${k} sent twice`);
      headers[n] = v;
    }
    const isHead = rec.method.toUpperCase() === "HEAD";
    if (isHead && body !== "") out.push("a HEAD answer has a body");
    const { route, pathKnown } = this.match(rec.service, rec.method, rec.path);
    // The HTTP layer's own refusals, on any path (x-herald-framing-answers).
    const framing = (this.doc["x-herald-framing-answers"] || {})[String(rec.status)];
    if (framing && (!route || !route.op.responses[String(rec.status)])) {
      const errs = this.checkErrorBody(body, headers, null, isHead);
      let code = null;
      try {
        code = JSON.parse(body).error.code;
      } catch {
        // reported by checkErrorBody
      }
      if (errs.length === 0 && code === framing) return out;
    }

    if (!route) {
      // Not an operation of this service: the contract's answers for those.
      const opts = rec.service === "history" && rec.method.toUpperCase() === "OPTIONS";
      if (opts) {
        const pre = this.routes.find((r) => r.servers.includes("history") && r.method === "options");
        return out.concat(this.checkOperation(rec, pre, headers, body, isHead));
      }
      const want = pathKnown ? { 405: "method_not_allowed", 501: "not_implemented" } : { 404: "not_found" };
      if (!(rec.status in want)) {
        out.push(`${pathKnown ? "a method the path does not take" : "a path the service does not have"} ` +
          `was answered ${rec.status}, not ${Object.keys(want).join("/")}`);
        return out;
      }
      out.push(...this.checkErrorBody(body, headers, want[rec.status], isHead));
      for (const n of Object.keys(headers)) {
        if (FRAMING.has(n) || n === "allow") continue;
        if (!this.checkEvery(rec.service, n, headers[n], out))
          out.push(`undocumented response header ${n}`);
      }
      return out;
    }
    return out.concat(this.checkOperation(rec, route, headers, body, isHead));
  }

  checkEvery(service, name, value, out) {
    const v = (this.every[service] || {})[name];
    if (!v) return false;
    if (!v({ v: value })) out.push(`header ${name}: ${JSON.stringify(value)} does not match its schema`);
    return true;
  }

  checkErrorBody(body, headers, code, isHead) {
    const out = [];
    if (essence(headers["content-type"]) !== "application/json") {
      out.push(`Content-Type ${headers["content-type"]} is not application/json`);
      return out;
    }
    if (isHead) return out;
    let v;
    try {
      v = JSON.parse(body);
    } catch (e) {
      return [`body is not JSON: ${JSON.stringify(body.slice(0, 200))}`];
    }
    if (!this.validateError(v)) out.push(`body is not an Error: ${this.errorSchema.errorsText(this.validateError.errors)}`);
    else if (code && v.error.code !== code) out.push(`error code ${v.error.code}, not ${code}`);
    return out;
  }

  checkOperation(rec, route, headers, body, isHead) {
    const out = [];
    const op = route.op;
    const status = String(rec.status);
    const resp = op.responses[status];
    const where = `${route.method.toUpperCase()} ${route.path} (${op.operationId})`;
    if (!resp) {
      out.push(`status ${status} is not documented for ${where}`);
      return out;
    }
    const content = resp.content || {};
    const types = Object.keys(content);
    const ct = essence(headers["content-type"]);
    if (types.length === 0) {
      if (body !== "") out.push(`${where} ${status} documents no body, got ${JSON.stringify(body.slice(0, 200))}`);
    } else if (!types.includes(ct)) {
      out.push(`${where} ${status}: Content-Type ${headers["content-type"]} is not one of ${types.join(", ")}`);
    } else if (ct === "application/json" && !isHead) {
      let v;
      if (!body.endsWith("\n")) out.push(`${where} ${status}: the JSON answer does not end with a newline`);
      try {
        v = JSON.parse(body);
      } catch (e) {
        out.push(`${where} ${status}: body is not JSON: ${JSON.stringify(body.slice(0, 200))}`);
        return out;
      }
      const res = this.api.validator.validateResponse(v, op, rec.status);
      for (const e of res.errors || [])
        out.push(`${where} ${status}: body${e.instancePath || ""} ${e.message}` +
          (e.params && e.params.additionalProperty ? ` (${e.params.additionalProperty})` : "") +
          (e.params && e.params.allowedValues ? ` (${e.params.allowedValues.join(", ")})` : ""));
    }
    // A request the service accepted must be one the contract allows.
    if (rec.status >= 200 && rec.status < 300 && route.method !== "options") {
      const req = {
        method: route.method,
        path: rec.path,
        query: rec.query || "",
        headers: Object.fromEntries(Object.entries(rec.request.headers).map(([k, v]) => [k.toLowerCase(), v])),
        body: rec.request.body ? rec.request.body.text : undefined,
      };
      if (typeof req.body === "string" && essence(req.headers["content-type"]) === "application/json") {
        try {
          req.body = JSON.parse(req.body);
        } catch {
          // left a string: the validator reports it
        }
      }
      const r = this.api.validator.validateRequest(req, op.operationId);
      // History ignores query parameters it does not know (the contract says so).
      const ignored = (e) => e.instancePath === "/query" && e.keyword === "additionalProperties";
      for (const e of (r.errors || []).filter((e) => !ignored(e)))
        out.push(`${where} ${status}: the accepted request${e.instancePath || ""} ${e.message}` +
          (e.params && e.params.additionalProperty ? ` (${e.params.additionalProperty})` : ""));
    }
    const rest = {};
    for (const [n, v] of Object.entries(headers)) {
      if (FRAMING.has(n)) continue;
      if (this.checkEvery(rec.service, n, v, out)) continue;
      rest[n] = v;
    }
    const hres = this.api.validator.validateResponseHeaders(rest, op, { statusCode: rec.status, setMatchType: "subset" });
    for (const e of hres.errors || [])
      out.push(`${where} ${status}: response headers${e.instancePath || ""} ${e.message}` +
        (e.params && e.params.additionalProperty ? ` (${e.params.additionalProperty})` : ""));
    return out;
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
    const lines = fs.readFileSync(f, "utf8").split("\n");
    lines.forEach((l, i) => {
      if (l.trim() === "") return;
      try {
        recs.push({ where: `${path.basename(f)}:${i + 1}`, rec: JSON.parse(l) });
      } catch (e) {
        recs.push({ where: `${path.basename(f)}:${i + 1}`, bad: `unreadable record: ${e.message}` });
      }
    });
  }
  return { files, recs };
}

async function main(argv) {
  if (argv.length < 2) {
    console.error("usage: node validate-traffic.mjs OPENAPI.yaml FILE_OR_DIR...");
    return 2;
  }
  const c = await new Contract(argv[0]).ready();
  const { files, recs } = readRecords(argv.slice(1));
  let bad = 0;
  const ops = {};
  for (const { where, rec, bad: unreadable } of recs) {
    const v = unreadable ? [unreadable] : c.check(rec);
    if (rec) {
      const r = c.match(rec.service, rec.method, rec.path).route;
      const k = `${rec.service} ${r ? r.op.operationId : "(unlisted)"}`;
      ops[k] = (ops[k] || 0) + 1;
    }
    for (const msg of v) {
      bad++;
      const q = rec && rec.query ? "?" + rec.query : "";
      console.log(`VIOLATION ${where} ${rec ? `[${rec.test}] ${rec.service} ${rec.method} ${rec.path}${q} -> ${rec.status}` : ""}: ${msg}`);
    }
  }
  console.log(`# ${recs.length} exchanges in ${files.length} files checked against ${argv[0]}: ${bad} violations`);
  for (const k of Object.keys(ops).sort()) console.log(`#   ${k}: ${ops[k]}`);
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
