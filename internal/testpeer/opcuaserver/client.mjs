// client.mjs reads one variable with node-opcua's own client, independent
// of fieldgate's: a test's check of what a write really put into the
// server. Prints {"value":…,"dataType":"Double"} as its last line on
// stdout (node-opcua logs on stdout too). PKI_DIR keeps the client's own
// certificate out of the home directory.
//
//   node client.mjs opc.tcp://127.0.0.1:PORT "ns=1;s=Boiler1.Setpoint" PKI_DIR
import { OPCUAClient, OPCUACertificateManager, MessageSecurityMode, SecurityPolicy, AttributeIds, DataType } from "node-opcua";
import process from "node:process";

const [endpoint, nodeId, pki] = process.argv.slice(2);
const clientCertificateManager = new OPCUACertificateManager({ rootFolder: pki, automaticallyAcceptUnknownCertificate: true });
await clientCertificateManager.initialize();
const client = OPCUAClient.create({
  clientCertificateManager,
  securityMode: MessageSecurityMode.None,
  securityPolicy: SecurityPolicy.None,
  endpointMustExist: false,
  connectionStrategy: { maxRetry: 2, initialDelay: 200 },
});
try {
  await client.connect(endpoint);
  const session = await client.createSession();
  const dv = await session.read({ nodeId, attributeId: AttributeIds.Value });
  process.stdout.write(JSON.stringify({ value: dv.value.value, dataType: DataType[dv.value.dataType], status: dv.statusCode.name }) + "\n");
  await session.close();
  await client.disconnect();
  process.exit(0);
} catch (err) {
  process.stderr.write(`opcua test client: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
}
