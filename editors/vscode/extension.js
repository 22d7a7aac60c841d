// The whole client: start `blend lsp` over stdio for .blend files and the YAML globs configured
// in `blendspec.yamlSpecs`. Everything else (highlighting, brackets, the YAML schema) is declared
// in package.json; everything the server does is in blendspec/lsp.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("blendspec");
  const [command, ...args] = config.get("server.command", ["blend", "lsp"]);
  const server = { command, args, transport: TransportKind.stdio };
  const yamlSpecs = config.get("yamlSpecs", []);
  client = new LanguageClient(
    "blendspec",
    "blendspec",
    { run: server, debug: server },
    {
      documentSelector: [
        { scheme: "file", language: "blend" },
        ...yamlSpecs.map((pattern) => ({ scheme: "file", language: "yaml", pattern })),
      ],
    },
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
