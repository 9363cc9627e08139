// compose-front.mjs - the web UI through compose.yml's TLS front, in
// Debian's Chromium: run by tests/compose_stack.py (scripts/compose-test)
// while the stack is up, not by `node --test` (the name has no ".test").
//
// The page is opened under a name that is not a loopback address
// (QMS_FRONT_HOST, mapped to 127.0.0.1 inside the browser only): over plain
// HTTP such a page is no secure context and the UI refuses to run, so this
// shows that the front's HTTPS is what makes the UI work.  Two people
// register in two browser contexts, find each other, and exchange messages
// end-to-end encrypted over wss:// through the front.
//
// Environment: QMS_FRONT_URL (https://NAME:PORT/), QMS_FRONT_HTTP_URL
// (http://NAME:PORT/, the redirecting port), QMS_FRONT_HOST (NAME).

import assert from "node:assert/strict";
import { launchBrowser, openPage, uniq } from "./lib/harness.mjs";
import { register, contact, openConversation, send, waitIncoming } from "./lib/ui.mjs";

const url = process.env.QMS_FRONT_URL;
const httpUrl = process.env.QMS_FRONT_HTTP_URL;
const host = process.env.QMS_FRONT_HOST;
assert.ok(url && httpUrl && host, "QMS_FRONT_URL, QMS_FRONT_HTTP_URL and QMS_FRONT_HOST are needed");

const step = (t) => console.log(t);
const browser = await launchBrowser([`--host-resolver-rules=MAP ${host} 127.0.0.1`]);
try {
  // plain HTTP: the browser is sent to HTTPS and the page is a secure context
  const alice = await openPage(browser, httpUrl);
  assert.equal(new URL(alice.url()).protocol, "https:", `redirected to HTTPS: ${alice.url()}`);
  assert.equal(await alice.evaluate(() => window.isSecureContext), true, "a secure context");
  assert.equal(await alice.locator("#insecure").isHidden(), true, "no 'HTTPS is needed' notice");
  step(`redirected from ${httpUrl} to ${alice.url()}, a secure context`);

  const bob = await openPage(browser, url);
  const [a, b] = [uniq("alice"), uniq("bob")];
  await register(alice, a);
  await register(bob, b);
  await contact(alice, b).waitFor();
  await contact(bob, a).waitFor();
  const chatSockets = (p) => p.sockets.map((s) => s.url()).filter((u) => u.startsWith("wss://"));
  assert.ok(chatSockets(alice).length > 0, `the chat connection is wss: ${alice.sockets.map((s) => s.url())}`);
  step(`${a} and ${b} registered; chat over ${chatSockets(alice)[0]}`);

  await openConversation(alice, b);
  assert.match(await alice.textContent("#peer-state"), /end-to-end encrypted/);
  await send(alice, "Hello through the TLS front");
  await openConversation(bob, a);
  await waitIncoming(bob, "Hello through the TLS front");
  await send(bob, "Received, over wss");
  await waitIncoming(alice, "Received, over wss");
  step("a message each way, end-to-end encrypted, through the front");
  for (const p of [alice, bob]) assert.deepEqual(p.pageErrors, [], "no errors in the page");
} finally {
  await browser.close();
}
