/**
 * Import three users into a new edition, create an SMS campaign for everyone in it, send it
 * now, and follow its figures live.
 *
 *   npm run build && node dist/examples/create-and-watch.js [host:port] [organization_id]
 *
 * Against `make run` (which starts a worker) the campaign goes calculating -> sending -> sent.
 */
import {
  type AudienceServiceClient, CampaignStatus, Channel, connect, type ImportUsersResponse, unary,
  User,
} from "../src";

function importUsers(audience: AudienceServiceClient, organizationId: number,
  editionId: number): Promise<ImportUsersResponse> {
  return new Promise((resolve, reject) => {
    const stream = audience.importUsers((error, response) =>
      error ? reject(error) : resolve(response));
    const users = ["Ann", "Bo", "Cy"].map((name, i) => User.fromPartial({
      externalId: `example-${name.toLowerCase()}`, firstName: name,
      phone: `+45201234${50 + i}`, smsConsent: true,
    }));
    stream.write({ organizationId, editionId, users });
    stream.end();
  });
}

async function main(): Promise<void> {
  const target = process.argv[2] ?? process.env.CAMPAIGNS_TARGET ?? "127.0.0.1:50051";
  const organizationId = Number(process.argv[3] ?? 1);
  const { audience, campaigns, close } = connect(target, { token: process.env.CAMPAIGNS_TOKEN });
  try {
    const { edition } = await unary(audience.createEdition.bind(audience), {
      edition: {
        id: 0, organizationId, name: "Festival 2027", timezone: "Europe/Copenhagen",
        defaultCountryCode: "+45", defaultLanguage: "", startDate: "", endDate: "",
      },
    });
    const imported = await importUsers(audience, organizationId, edition!.id);
    console.log(`imported users: ${imported.created} created, ${imported.updated} updated`);
    const { segment } = await unary(audience.createSegment.bind(audience), {
      segment: {
        id: 0, organizationId, editionId: edition!.id, name: "Everyone", expression: "true",
      },
    });
    const { campaign } = await unary(campaigns.createCampaign.bind(campaigns), {
      organizationId, editionId: edition!.id, segmentId: segment!.id, name: "Early birds",
      channel: Channel.CHANNEL_SMS, emailMessageId: 0, smsBody: "Tickets are out!",
      requestId: `example-${Date.now()}`, scheduledAt: undefined,
    });
    console.log(`created campaign ${campaign!.id} (${CampaignStatus[campaign!.status]})`);
    await unary(campaigns.sendCampaignNow.bind(campaigns), { id: campaign!.id, requestId: "" });
    for await (const update of campaigns.watchCampaignStats({ id: campaign!.id })) {
      const stats = update.stats!;
      console.log(`${CampaignStatus[stats.status]}: ${stats.sent + stats.failed}`
        + `/${stats.totalRecipients} (failed ${stats.failed})${update.final ? " - done" : ""}`);
    }
  } finally {
    close();
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
