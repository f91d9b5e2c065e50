// A Node.js banditroute client: loads router.proto at run time with @grpc/proto-loader and
// calls the server with @grpc/grpc-js, as a non-Python gateway would.
//
// Usage: node tests/polyglot/client.mjs HOST:PORT
//
// Routes one prompt, reports feedback for the chosen model, then sends an invalid Route
// (empty prompt), and prints one JSON object: {route, feedback, error: {code, details}}.
// Exits non-zero (with a message on stderr) if a call that should succeed fails.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const DEADLINE_MS = 10000;
const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.resolve(here, '..', '..', 'proto');

const address = process.argv[2];
if (!address) {
  console.error('usage: node client.mjs HOST:PORT');
  process.exit(2);
}

// google/protobuf/timestamp.proto is not under proto/: proto-loader resolves the well-known
// types from the copies protobufjs ships.
const definition = protoLoader.loadSync('banditroute/v1/router.proto', {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { RouterService } = grpc.loadPackageDefinition(definition).banditroute.v1;
const client = new RouterService(address, grpc.credentials.createInsecure());

function call(method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + DEADLINE_MS);
    client[method](request, { deadline }, (error, response) => {
      if (error) reject(error);
      else resolve(response);
    });
  });
}

async function main() {
  const route = await call('Route', {
    prompt: 'Write a JavaScript function that checks whether a string is a palindrome.',
    tags: { client: 'node' },
  });
  const feedback = await call('Feedback', {
    decision_id: route.decision_id,
    quality: 0.75,
    latency_ms: 420.5,
    input_tokens: 120,
    output_tokens: 80,
    status: 'OUTCOME_STATUS_OK',
  });
  let error = null;
  try {
    await call('Route', { prompt: '' });
  } catch (caught) {
    error = { code: caught.code, details: caught.details };
  }
  process.stdout.write(`${JSON.stringify({ route, feedback, error })}\n`);
}

main()
  .catch((failure) => {
    console.error(`client failed: ${failure.code ?? ''} ${failure.details ?? failure.message}`);
    process.exitCode = 1;
  })
  .finally(() => client.close());
