/**
 * campaigns.v1 for Node: the generated ts-proto clients (src/gen, do not edit) plus a small
 * hand-written layer: `connect()` builds the four service clients on one channel with TLS or
 * plaintext and an optional bearer token, and `unary()` / `collect()` turn callbacks and
 * streams into promises with a deadline.
 */
import {
  type CallOptions,
  type ClientUnaryCall,
  type ClientReadableStream,
  credentials,
  type ChannelCredentials,
  type Interceptor,
  InterceptingCall,
  Metadata,
  type ServiceError,
  status,
} from "@grpc/grpc-js";

import { AudienceServiceClient } from "./gen/campaigns/v1/audience_service";
import { CampaignServiceClient } from "./gen/campaigns/v1/campaign_service";
import { DeliveryServiceClient } from "./gen/campaigns/v1/delivery_service";
import { EmailMessageServiceClient } from "./gen/campaigns/v1/email_message_service";

export * from "./gen/campaigns/v1/campaign";
export * from "./gen/campaigns/v1/campaign_service";
export * from "./gen/campaigns/v1/audience_service";
export * from "./gen/campaigns/v1/edition";
export * from "./gen/campaigns/v1/segment";
export * from "./gen/campaigns/v1/user";
export * from "./gen/campaigns/v1/email_message";
export * from "./gen/campaigns/v1/email_message_service";
export * from "./gen/campaigns/v1/delivery_service";
export { status };
export type { ServiceError };

/** How to reach the server. */
export interface ConnectOptions {
  /** Plaintext (no TLS); the default only when no certificate is given. */
  insecure?: boolean;
  /** PEM root certificates to trust; the system's when omitted. */
  rootCert?: Buffer;
  /** PEM client certificate and key, for mutual TLS. */
  clientCert?: Buffer;
  clientKey?: Buffer;
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
}

/** The four services of campaigns.v1 on one channel. */
export interface Clients {
  campaigns: CampaignServiceClient;
  audience: AudienceServiceClient;
  messages: EmailMessageServiceClient;
  delivery: DeliveryServiceClient;
  /** Close the channel. */
  close(): void;
}

function channelCredentials(options: ConnectOptions): ChannelCredentials {
  const tls = Boolean(options.rootCert || options.clientCert || options.insecure === false);
  return tls
    ? credentials.createSsl(options.rootCert ?? null, options.clientKey ?? null,
      options.clientCert ?? null)
    : credentials.createInsecure();
}

/** Adds `authorization: Bearer <token>` to every call (TLS or not, unlike call credentials). */
function bearer(token: string): Interceptor {
  return (options, nextCall) => new InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      metadata.set("authorization", `Bearer ${token}`);
      next(metadata, listener);
    },
  });
}

/** Clients for every service at `target` ("host:port"). */
export function connect(target: string, options: ConnectOptions = {}): Clients {
  const creds = channelCredentials(options);
  const interceptors = options.token ? [bearer(options.token)] : [];
  const campaigns = new CampaignServiceClient(target, creds, { interceptors });
  const shared = { interceptors, channelOverride: campaigns.getChannel() };
  return {
    campaigns,
    audience: new AudienceServiceClient(target, creds, shared),
    messages: new EmailMessageServiceClient(target, creds, shared),
    delivery: new DeliveryServiceClient(target, creds, shared),
    close: () => campaigns.close(),
  };
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/** Call a unary method and await its response; rejects with the ServiceError. */
export function unary<Req, Res>(
  method: UnaryMethod<Req, Res>,
  request: Req,
  timeoutMs = 10_000,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + timeoutMs);
    method(request, new Metadata(), { deadline }, (error, response) =>
      error ? reject(error) : resolve(response));
  });
}

/** Every message of a server stream, once it has ended. */
export function collect<T>(stream: ClientReadableStream<T>): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const items: T[] = [];
    stream.on("data", (item: T) => items.push(item));
    stream.on("error", reject);
    stream.on("end", () => resolve(items));
  });
}
