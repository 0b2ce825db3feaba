// Browser test of the coupon console, run by e2e_test.go against a real
// service: Debian's chromium driven by playwright-core (no browser is ever
// downloaded). Environment:
//   BASE_URL     the HTTP listener, e.g. http://127.0.0.1:41234
//   SCREENSHOTS  folder for the screenshots (git-ignored)
//   LOOKUP, AUDIT  "unimplemented" when the service does not implement
//                LookupCoupons / ListAuditLog yet: the page must then show
//                that refusal in words instead of results
//   WEBHOOK_URL  a receiver on loopback for the webhook endpoint bob adds
//   WEBHOOK_SECRET_FILE  where the endpoint's secret, read off the page, is
//                written for e2e_test.go to verify the deliveries with
// Each step logs one line; the first failed assertion ends the run with
// exit status 1.
'use strict';

const { chromium } = require('playwright-core');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const base = process.env.BASE_URL;
const shots = process.env.SCREENSHOTS || path.join(__dirname, 'screenshots');
const run = Date.now().toString(36);

let passed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
  } catch (err) {
    console.log(`FAIL ${name}: ${err && err.stack ? err.stack : err}`);
    throw err;
  }
  passed++;
  console.log(`ok   ${name} (${Date.now() - t0} ms)`);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

// local formats a Date for <input type="datetime-local"> in UTC.
function local(d) {
  return d.toISOString().slice(0, 16);
}

async function signIn(browser, token) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  await page.goto(`${base}/console/`);
  assert.match(page.url(), /\/console\/signin$/, 'an anonymous visit goes to sign-in');
  await page.fill('input[name=token]', token);
  return { ctx, page };
}

async function problemReason(page) {
  return page.locator('.problem').getAttribute('data-reason');
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const now = new Date();
  const campaignName = `E2E spring ${run}`;
  let alice, bob, templateURL, templateID, couponCode, endpointID;
  try {
    await step('a wrong token is refused at sign-in', async () => {
      const { ctx, page } = await signIn(browser, 'not-a-token');
      await page.click('button[type=submit]');
      assert.equal(await problemReason(page), 'UNAUTHENTICATED');
      assert.match(page.url(), /\/console\/signin$/);
      await ctx.close();
    });

    await step('alice signs in', async () => {
      alice = await signIn(browser, 'local-admin-alice');
      await shot(alice.page, '01-signin');
      await alice.page.click('button[type=submit]');
      await alice.page.waitForURL(/\/console\/campaigns$/);
      assert.equal(await alice.page.textContent('[data-testid=identity]'), 'alice');
      const cookies = await alice.ctx.cookies();
      const session = cookies.find((c) => c.name === 'coupon_console');
      assert.ok(session, 'a session cookie is set');
      assert.equal(session.httpOnly, true, 'the session cookie is HttpOnly');
      assert.equal(session.sameSite, 'Strict', 'the session cookie is SameSite=Strict');
    });

    await step('a refused campaign form writes nothing and says why', async () => {
      const p = alice.page;
      const before = await p.locator('[data-testid=campaigns] tbody tr').count();
      await p.fill('[data-testid=new-campaign] input[name=name]', `${campaignName} backwards`);
      await p.fill('[data-testid=new-campaign] input[name=start_time]', local(new Date(now.getTime() + 86400e3)));
      await p.fill('[data-testid=new-campaign] input[name=end_time]', local(new Date(now.getTime() - 3600e3)));
      await p.click('[data-testid=new-campaign] button[type=submit]');
      assert.equal(await problemReason(p), 'INVALID_ARGUMENT');
      assert.match(await p.textContent('.problem'), /end_time/);
      await shot(p, '02-campaign-refused');
      await p.goto(`${base}/console/campaigns`);
      assert.equal(await p.locator('[data-testid=campaigns] tbody tr').count(), before, 'no campaign was written');
    });

    await step('alice creates a campaign', async () => {
      const p = alice.page;
      await p.fill('[data-testid=new-campaign] input[name=name]', campaignName);
      await p.fill('[data-testid=new-campaign] input[name=campaign_type]', 'PROMOTION');
      await p.fill('[data-testid=new-campaign] input[name=start_time]', local(new Date(now.getTime() - 3600e3)));
      await p.fill('[data-testid=new-campaign] input[name=end_time]', local(new Date(now.getTime() + 7 * 86400e3)));
      await p.click('[data-testid=new-campaign] button[type=submit]');
      await p.waitForURL(/\/console\/campaigns\/\d+$/);
      assert.match(await p.textContent('.flash'), /created/);
      assert.equal(await p.textContent('[data-testid=campaign-status]'), 'ACTIVE');
      await p.goto(`${base}/console/campaigns?status=ACTIVE`);
      assert.ok(await p.locator(`[data-testid=campaigns] a:text-is("${campaignName}")`).count() === 1, 'the filtered list shows it');
      await shot(p, '03-campaigns');
    });

    await step('the live check catches a bad rule and bad money as she types', async () => {
      const p = alice.page;
      await p.click(`[data-testid=campaigns] a:text-is("${campaignName}")`);
      await p.click('a:text-is("New template")');
      await p.waitForURL(/\/templates\/new$/);
      const f = '[data-testid=new-template]';
      await p.fill(`${f} input[name=name]`, `10 off 50 (${run})`);
      await p.fill(`${f} input[name=discount_amount]`, '10.505');
      await p.locator('#check [data-reason=INVALID_ARGUMENT]').waitFor();
      assert.match(await p.textContent('#check'), /discount_amount/);
      await p.fill(`${f} input[name=discount_amount]`, '10.00');
      await p.fill(`${f} textarea[name=usage_rule]`, 'order.amount >=');
      await p.locator('#check [data-reason=INVALID_RULE]').waitFor();
      await shot(p, '04-template-live-check');
      await p.fill(`${f} textarea[name=usage_rule]`, 'order.amount >= 5000');
      await p.locator('#check .good').waitFor();
      assert.match(await p.textContent('#check'), /10\.00 off/);
    });

    await step('alice creates a template', async () => {
      const p = alice.page;
      const f = '[data-testid=new-template]';
      await p.fill(`${f} input[name=min_order_amount]`, '50');
      await p.fill(`${f} input[name=product_lines]`, 'food');
      await p.fill(`${f} input[name=total_stock]`, '10');
      await p.fill(`${f} input[name=per_user_limit]`, '1');
      await p.fill(`${f} input[name=valid_from]`, local(new Date(now.getTime() - 3600e3)));
      await p.fill(`${f} input[name=valid_until]`, local(new Date(now.getTime() + 7 * 86400e3)));
      await shot(p, '05-template-new');
      await p.click(`${f} button[type=submit]`);
      await p.waitForURL(/\/console\/templates\/\d+$/);
      templateURL = p.url();
      templateID = templateURL.split('/').pop();
      assert.equal(await p.textContent('[data-testid=template-status]'), 'PENDING_APPROVAL');
    });

    await step('alice cannot approve her own template: the queue says why', async () => {
      const p = alice.page;
      await p.goto(`${base}/console/templates`);
      const row = p.locator(`tr[data-template="${templateID}"]`);
      assert.match(await row.textContent(), /you/, 'her template is in the queue, marked as hers');
      await p.click(`[data-testid=approve-${templateID}]`);
      assert.equal(await problemReason(p), 'APPROVER_IS_CREATOR');
      assert.match(await p.textContent('.problem'), /someone else must/);
      await shot(p, '06-approval-refused');
      await p.goto(templateURL);
      assert.equal(await p.textContent('[data-testid=template-status]'), 'PENDING_APPROVAL', 'nothing was written');
    });

    await step('alice signs out', async () => {
      await alice.page.click('header button:text-is("Sign out")');
      await alice.page.waitForURL(/\/console\/signin$/);
      await alice.page.goto(`${base}/console/campaigns`);
      assert.match(alice.page.url(), /\/console\/signin$/, 'the session is gone');
    });

    await step('bob signs in and approves it', async () => {
      bob = await signIn(browser, 'local-admin-bob');
      await bob.page.click('button[type=submit]');
      await bob.page.waitForURL(/\/console\/campaigns$/);
      await bob.page.goto(`${base}/console/templates`);
      await shot(bob.page, '07-approval-queue');
      await bob.page.click(`[data-testid=approve-${templateID}]`);
      assert.match(await bob.page.textContent('.flash'), /approved by bob/);
      await bob.page.goto(templateURL);
      assert.equal(await bob.page.textContent('[data-testid=template-status]'), 'ACTIVE');
    });

    await step('bob tops up the stock once per request id', async () => {
      const p = bob.page;
      const reqID = await p.inputValue('[data-testid=stock-request-id]');
      await p.fill('[data-testid=add-stock] input[name=amount]', '5');
      await p.click('[data-testid=add-stock] button[type=submit]');
      assert.match(await p.textContent('.flash'), new RegExp(`request id ${reqID}: total 15, remaining 15`));
      await p.fill('[data-testid=add-stock] input[name=amount]', '5');
      await p.fill('[data-testid=stock-request-id]', reqID);
      await p.click('[data-testid=add-stock] button[type=submit]');
      assert.match(await p.textContent('.flash'), /applied before; nothing changed now \(total 15/);
    });

    await step('bob adds a webhook endpoint and sees its secret once', async () => {
      const p = bob.page;
      await p.goto(`${base}/console/webhooks`);
      await p.fill('[data-testid=new-webhook] input[name=url]', 'http://example.com/hook');
      await p.click('[data-testid=new-webhook] button[type=submit]');
      assert.equal(await problemReason(p), 'INSECURE_WEBHOOK_URL', 'plain http to another host is refused');
      await p.fill('[data-testid=new-webhook] input[name=url]', process.env.WEBHOOK_URL);
      await p.check('[data-testid=new-webhook] input[value="coupon.claimed"]');
      await p.click('[data-testid=new-webhook] button[type=submit]');
      await p.waitForURL(/\/console\/webhooks$/);
      assert.match(await p.textContent('.flash'), /created for/);
      const secret = await p.textContent('[data-testid=secret]');
      assert.match(secret, /^whsec_[A-Za-z0-9_-]{43}$/);
      fs.writeFileSync(process.env.WEBHOOK_SECRET_FILE, secret);
      const card = p.locator('section.endpoint', { has: p.locator(`[data-testid=webhook-url]:text-is("${process.env.WEBHOOK_URL}")`) });
      endpointID = await card.getAttribute('data-endpoint');
      assert.equal(await card.locator('[data-testid=webhook-status]').textContent(), 'ENABLED');
      await shot(p, '08a-webhook-secret');
      await p.reload();
      assert.equal(await p.locator('[data-testid=secret]').count(), 0, 'the secret is shown only once');
    });

    await step('a claim through the HTTP API shows in the stats', async () => {
      const claim = () => fetch(`${base}/v1/users/4242/coupons`, {
        method: 'POST',
        headers: { Authorization: 'Bearer local-app', 'Content-Type': 'application/json' },
        body: JSON.stringify({ request_id: `e2e-${run}`, template_id: templateID }),
      }).then(async (r) => ({ status: r.status, body: await r.json() }));
      const first = await claim();
      assert.equal(first.status, 200, JSON.stringify(first.body));
      const again = await claim();
      assert.equal(again.body.code, first.body.code, 'a retried claim returns the same coupon');
      couponCode = first.body.code;
      const p = bob.page;
      await p.goto(templateURL);
      assert.equal(await p.textContent('[data-stat=issued]'), '1');
      assert.equal(await p.textContent('[data-stat=available]'), '1');
      assert.equal(await p.textContent('[data-stat=remaining]'), '14');
      assert.equal(await p.locator('svg.chart rect.bar-issued').count(), 1, 'the chart is drawn');
      await shot(p, '08-template-stats');
    });

    await step("the claim's webhook delivery is listed and sent again", async () => {
      const p = bob.page;
      const row = p.locator(`section.endpoint[data-endpoint="${endpointID}"] tr[data-event="${couponCode}.1"]`);
      for (let i = 0; i < 100 && (await row.count()) === 0; i++) {
        await p.waitForTimeout(200);
        await p.goto(`${base}/console/webhooks`);
      }
      assert.equal(await row.count(), 1, 'the coupon.claimed delivery is listed');
      assert.match(await row.locator('[data-testid=delivery-status]').textContent(), /204 delivered/);
      await shot(p, '08b-webhook-deliveries');
      await row.locator('button:text-is("Redeliver")').click();
      assert.match(await p.textContent('.flash'), new RegExp(`${couponCode}\\.1 sent again to endpoint ${endpointID}: delivered \\(HTTP 204`));
      const card = p.locator(`section.endpoint[data-endpoint="${endpointID}"]`);
      await card.locator('input[name=reason]').fill('receiver maintenance');
      await card.locator('button:text-is("Disable")').click();
      assert.equal(await card.locator('[data-testid=webhook-status]').textContent(), 'DISABLED');
      assert.equal(await card.locator('[data-testid=webhook-disabled-reason]').textContent(), 'receiver maintenance');
      await card.locator('button:text-is("Enable")').click();
      assert.equal(await card.locator('[data-testid=webhook-status]').textContent(), 'ENABLED');
    });

    await step('bob edits, pauses and resumes the campaign', async () => {
      const p = bob.page;
      await p.goto(`${base}/console/campaigns`);
      await p.click(`[data-testid=campaigns] a:text-is("${campaignName}")`);
      await p.fill('[data-testid=edit-campaign] input[name=description]', 'Spring sale, edited by bob');
      await p.click('[data-testid=edit-campaign] button[type=submit]');
      assert.match(await p.textContent('.flash'), /saved/);
      await p.click('.actions button:text-is("Pause")');
      assert.equal(await p.textContent('[data-testid=campaign-status]'), 'PAUSED');
      await p.goto(`${base}/console/campaigns?status=PAUSED`);
      assert.equal(await p.locator(`[data-testid=campaigns] a:text-is("${campaignName}")`).count(), 1);
      await p.click(`[data-testid=campaigns] a:text-is("${campaignName}")`);
      await shot(p, '09-campaign');
      await p.click('.actions button:text-is("Resume")');
      assert.equal(await p.textContent('[data-testid=campaign-status]'), 'ACTIVE');
    });

    await step('the coupon is looked up by code', async () => {
      const p = bob.page;
      await p.goto(`${base}/console/coupons`);
      await p.fill('[data-testid=lookup] input[name=code]', couponCode);
      await p.click('[data-testid=lookup] button[type=submit]');
      if (process.env.LOOKUP === 'unimplemented') {
        assert.equal(await problemReason(p), 'UNIMPLEMENTED');
        assert.match(await p.textContent('.problem'), /does not implement/);
      } else {
        const card = p.locator(`section.coupon[data-code="${couponCode}"]`);
        assert.equal(await card.count(), 1, 'the coupon is found');
        assert.equal(await card.locator('[data-testid=coupon-status]').textContent(), 'AVAILABLE');
        assert.match(await card.textContent(), /4242/);
      }
      await shot(p, '10-coupon-lookup');
    });

    await step('the audit log page', async () => {
      const p = bob.page;
      await p.goto(`${base}/console/audit`);
      if (process.env.AUDIT === 'unimplemented') {
        assert.equal(await problemReason(p), 'UNIMPLEMENTED');
      } else {
        assert.ok(await p.locator('[data-testid=audit] tbody tr').count() >= 1, 'the changes are in the audit log');
        assert.match(await p.textContent('[data-testid=audit]'), /ApproveTemplate/);
      }
      await shot(p, '11-audit');
    });

    await step('the reconcile runs page links to the report', async () => {
      const p = bob.page;
      await p.goto(`${base}/console/reconcile`);
      const table = p.locator('[data-testid=reconcile]');
      assert.match(await table.textContent(), /COUPON_USED_ORDER_NOT_PAID/);
      assert.match(await table.textContent(), /12\.34/);
      await shot(p, '12-reconcile');
      await p.click('[data-testid=reconcile] a:text-is("report")');
      assert.match(await p.textContent('body'), /reconcile report fixture/);
    });

    await step('a form without the CSRF token is refused', async () => {
      const p = bob.page;
      await p.goto(templateURL);
      const status = await p.evaluate(async (url) => {
        const r = await fetch(url + '/status', { method: 'POST', body: new URLSearchParams({ status: 'ENDED' }) });
        return r.status;
      }, templateURL);
      assert.equal(status, 403);
      await p.reload();
      assert.equal(await p.textContent('[data-testid=template-status]'), 'ACTIVE', 'nothing was written');
    });
  } finally {
    await browser.close();
  }
  console.log(`${passed} passed, 0 failed`);
}

main().catch(() => {
  console.log(`${passed} passed, 1 failed`);
  process.exit(1);
});
