/**
 * The generated TypeScript client against a real server (see server.ts): create an edition, a
 * segment and a campaign, read the campaign back, map an error, and follow a watch to its end.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  CampaignStatus, Channel, collect, connect, type ImportUsersResponse, type ServiceError, status,
  unary, User,
} from "../src";
import { type RunningServer, startServer } from "./server";

let server: RunningServer;

before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

async function campaignFixture(organizationId: number) {
  const { audience, campaigns } = server.clients;
  const { edition } = await unary(audience.createEdition.bind(audience), {
    edition: {
      id: 0, organizationId, name: "Festival 2027", timezone: "Europe/Copenhagen",
      defaultCountryCode: "+45", defaultLanguage: "", startDate: "", endDate: "",
    },
  });
  assert.ok(edition && edition.id > 0);
  const { segment } = await unary(audience.createSegment.bind(audience), {
    segment: {
      id: 0, organizationId, editionId: edition.id, name: "Everyone", expression: "true",
    },
  });
  assert.ok(segment && segment.id > 0);
  const { campaign } = await unary(campaigns.createCampaign.bind(campaigns), {
    organizationId, editionId: edition.id, segmentId: segment.id, name: "Early birds",
    channel: Channel.CHANNEL_SMS, emailMessageId: 0, smsBody: "Tickets are out!",
    requestId: `ts-${organizationId}`, scheduledAt: undefined,
  });
  assert.ok(campaign);
  return campaign;
}

test("creates an edition, a segment and a campaign, and reads the campaign back", async () => {
  const created = await campaignFixture(101);
  assert.equal(created.status, CampaignStatus.CAMPAIGN_STATUS_DRAFT);
  const { campaigns } = server.clients;
  const { campaign } = await unary(campaigns.getCampaign.bind(campaigns), { id: created.id });
  assert.ok(campaign);
  assert.equal(campaign.name, "Early birds");
  assert.equal(campaign.channel, Channel.CHANNEL_SMS);
  assert.equal(campaign.smsBody, "Tickets are out!");
  assert.equal(campaign.timezone, "Europe/Copenhagen");
  assert.ok(campaign.created instanceof Date);
  const listed = await unary(campaigns.listCampaigns.bind(campaigns), {
    channel: 0, editionId: 0, organizationId: 101, status: 0, search: "", ordering: "",
    page: 0, pageSize: 0,
  });
  assert.equal(listed.count, 1);
  assert.equal(listed.results[0].id, created.id);
});

test("an unknown campaign is NOT_FOUND", async () => {
  const { campaigns } = server.clients;
  await assert.rejects(unary(campaigns.getCampaign.bind(campaigns), { id: 9_000_000_000 }),
    (error: ServiceError) => error.code === status.NOT_FOUND);
});

test("calls without the token, or with a wrong one, are UNAUTHENTICATED", async () => {
  for (const options of [{}, { token: "not-the-token" }]) {
    const clients = connect(server.target, options);
    try {
      await assert.rejects(unary(clients.campaigns.getCampaign.bind(clients.campaigns), { id: 1 }),
        (error: ServiceError) => error.code === status.UNAUTHENTICATED);
    } finally {
      clients.close();
    }
  }
});

test("a watch ends with a final snapshot once the campaign is cancelled", async () => {
  const created = await campaignFixture(102);
  const { campaigns } = server.clients;
  const cancelled = await unary(campaigns.cancelCampaign.bind(campaigns),
    { id: created.id, requestId: "" });
  assert.equal(cancelled.campaign?.status, CampaignStatus.CAMPAIGN_STATUS_CANCELLED);
  const snapshots = await collect(campaigns.watchCampaignStats({ id: created.id }));
  const last = snapshots[snapshots.length - 1];
  assert.equal(last.final, true);
  assert.equal(last.stats?.status, CampaignStatus.CAMPAIGN_STATUS_CANCELLED);
});

test("imports users over a client stream", async () => {
  const { audience } = server.clients;
  const result = await new Promise<ImportUsersResponse>((resolve, reject) => {
    const stream = audience.importUsers((error, response) =>
      error ? reject(error) : resolve(response));
    const user = (externalId: string, email: string) => User.fromPartial({
      externalId, email, emailConsent: true, attributes: { tier: "vip" },
    });
    stream.write({ organizationId: 103, editionId: 0, users: [user("a", "a@example.com")] });
    stream.write({ organizationId: 103, editionId: 0, users: [user("b", "not-an-email")] });
    stream.end();
  });
  assert.equal(result.created, 1);
  assert.equal(result.rejected, 1);
  assert.equal(result.rejections[0].field, "email");
});
