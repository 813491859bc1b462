// `asyncapi validate --fail-severity=warn` without the CLI's 1,100 packages:
//
//   node asyncapi-validate.mjs ASYNCAPI.yaml
//
// The AsyncAPI CLI's validate command is @asyncapi/parser's Parser.validate
// with its default ruleset (the spec's JSON Schema plus the Spectral rules of
// the AsyncAPI initiative); this runs the same, prints every diagnostic, and
// exits 1 when one is an error or a warning (information and hints pass).
import fs from "node:fs";
import path from "node:path";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const file = process.argv[2];
if (!file) {
  console.error("usage: node asyncapi-validate.mjs ASYNCAPI.yaml");
  process.exit(2);
}
const parser = new Parser();
const diagnostics = await parser.validate(fs.readFileSync(file, "utf8"), { source: path.resolve(file) });
const names = { [DiagnosticSeverity.Error]: "error", [DiagnosticSeverity.Warning]: "warning",
  [DiagnosticSeverity.Information]: "information", [DiagnosticSeverity.Hint]: "hint" };
let failing = 0;
for (const d of diagnostics) {
  const at = d.range ? `${d.range.start.line + 1}:${d.range.start.character + 1}` : "-";
  const sev = names[d.severity] || String(d.severity);
  if (d.severity <= DiagnosticSeverity.Warning) failing++;
  console.log(`${file}:${at} ${sev} ${d.code} ${d.message}${d.path && d.path.length ? ` (${d.path.join(".")})` : ""}`);
}
console.log(`# ${file}: ${diagnostics.length} diagnostics, ${failing} errors or warnings`);
process.exit(failing ? 1 : 0);
