// Shared by the example bot and monitor: riskgate's services, loaded from proto/ at run time
// (@grpc/proto-loader), never generated into the repository.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const PROTO_DIR = process.env.RISKGATE_PROTO_DIR || path.join(__dirname, '..', '..', 'proto');

const definition = loader.loadSync(path.join(PROTO_DIR, 'riskgate/v1/riskgate.proto'), {
  includeDirs: [PROTO_DIR],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const v1 = grpc.loadPackageDefinition(definition).riskgate.v1;

/**
 * Channel credentials: plaintext, for a riskgate on localhost. (With TLS, use
 * grpc.credentials.createSsl(ca, key, cert).) A bearer token travels as call metadata.
 */
function credentials() {
  return grpc.credentials.createInsecure();
}

/** Call metadata: the bearer token, when riskgate runs with auth.mode = "token". */
function metadata(token) {
  const md = new grpc.Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  return md;
}

/** The value of `--name` on the command line, or `fallback`. */
function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

module.exports = { grpc, v1, credentials, metadata, arg };
