// An authorized API call from a Node.js function: one invocation of the service's CallApiFunction, which
// applies the connection's token, allowed URLs, SSRF guard, 401 refresh and rate-limit rules itself.
//
//   node call_api.mjs '{"tenant_id": "acme", "connection_id": "con_...", "method": "GET", "path": "/me"}'
//   node call_api.mjs --endpoint http://127.0.0.1:3001 --function CallApiFunction '<request JSON>'
//
// The endpoint defaults to AWS_ENDPOINT_URL_LAMBDA (the SDK's own variable), else the region's Lambda
// service; credentials and region come from the SDK's usual chain. Prints the answer as JSON; exits 0 for
// an answer, 1 for an {"error": ...} answer, 2 when the invocation itself failed.
import { InvokeCommand, LambdaClient } from "@aws-sdk/client-lambda";

export async function callApi(request, { endpoint, functionName = "CallApiFunction", client } = {}) {
  const lambda = client ?? new LambdaClient(endpoint ? { endpoint } : {});
  const result = await lambda.send(
    new InvokeCommand({
      FunctionName: functionName,
      InvocationType: "RequestResponse",
      Payload: new TextEncoder().encode(JSON.stringify(request)),
    }),
  );
  const answer = JSON.parse(new TextDecoder().decode(result.Payload ?? new Uint8Array()) || "null");
  if (result.FunctionError || answer === null || typeof answer !== "object") {
    throw new Error(`CallApiFunction failed: ${result.FunctionError ?? "no answer"}`);
  }
  return answer;
}

function parseArguments(argv) {
  const options = { functionName: process.env.CALL_API_FUNCTION_NAME || "CallApiFunction" };
  const rest = [];
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--endpoint") options.endpoint = argv[++i];
    else if (argv[i] === "--function") options.functionName = argv[++i];
    else rest.push(argv[i]);
  }
  if (rest.length !== 1) throw new Error("usage: call_api.mjs [--endpoint URL] [--function NAME] '<request JSON>'");
  return { request: JSON.parse(rest[0]), options };
}

async function main() {
  let parsed;
  try {
    parsed = parseArguments(process.argv.slice(2));
  } catch (error) {
    console.error(error.message);
    return 2;
  }
  try {
    const answer = await callApi(parsed.request, parsed.options);
    console.log(JSON.stringify(answer, null, 2));
    return "error" in answer ? 1 : 0;
  } catch (error) {
    console.error(error.message);
    return 2;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exitCode = await main();
}
