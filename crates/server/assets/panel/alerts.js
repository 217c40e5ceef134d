// Alerts for a new offer the agent is not looking at: an optional sound and an optional
// desktop notification, each switched on by the agent (kept per agent in this browser).
// The panel never takes the card away from the conversation the agent is working on, so
// these, the tab badge, the offer bar and the window title are how a new call gets noticed.

const SETTINGS = ["sound", "notify"];

let storageKey = (name) => `cxbridge:alerts:${name}`;
let openConversation = () => {};
let audio = null;
let unlockWired = false;

function read(name) {
  try {
    return localStorage.getItem(storageKey(name)) === "on";
  } catch {
    return false;
  }
}

function write(name, on) {
  try {
    if (on) localStorage.setItem(storageKey(name), "on");
    else localStorage.removeItem(storageKey(name));
  } catch { /* storage full or blocked: the setting lasts for this page only */ }
}

/** Wires the two checkboxes of the topbar. `keyFor(name)` names the agent's storage key;
 * `open(id)` shows a conversation (a click on a desktop notification). */
export function initAlerts({ keyFor, open }) {
  storageKey = keyFor;
  openConversation = open;
  // Browsers let audio start only after a gesture: the first click or key on the page.
  if (unlockWired) return wireSettings();
  unlockWired = true;
  const unlock = () => {
    if (read("sound")) beep(0.0001);
    document.removeEventListener("pointerdown", unlock, true);
    document.removeEventListener("keydown", unlock, true);
  };
  document.addEventListener("pointerdown", unlock, true);
  document.addEventListener("keydown", unlock, true);
  wireSettings();
}

/** The checkboxes show the signed-in agent's settings. */
function wireSettings() {
  for (const name of SETTINGS) {
    const box = document.querySelector(`[data-testid="alert-${name}"]`);
    if (!box) continue;
    box.checked = read(name) && (name !== "notify" || notificationsAllowed());
    box.onchange = async () => {
      let on = box.checked;
      if (name === "notify" && on) on = await askForNotifications();
      box.checked = on;
      write(name, on);
      // The first user gesture also unlocks audio for later offers.
      if (name === "sound" && on) beep(0.0001);
    };
  }
}

function notificationsAllowed() {
  return typeof Notification !== "undefined" && Notification.permission === "granted";
}

async function askForNotifications() {
  if (typeof Notification === "undefined") return false;
  if (Notification.permission === "granted") return true;
  if (Notification.permission === "denied") return false;
  try {
    return (await Notification.requestPermission()) === "granted";
  } catch {
    return false;
  }
}

/** A short two-tone chime through Web Audio (no file, nothing fetched). */
function beep(volume = 0.08) {
  try {
    audio ??= new AudioContext();
    // Created without a user gesture (an offer right after a reload) it starts suspended.
    if (audio.state === "suspended") audio.resume().catch(() => {});
    const now = audio.currentTime;
    for (const [i, hz] of [880, 660].entries()) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = hz;
      gain.gain.setValueAtTime(volume, now + i * 0.18);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.18 + 0.16);
      osc.connect(gain).connect(audio.destination);
      osc.start(now + i * 0.18);
      osc.stop(now + i * 0.18 + 0.17);
    }
  } catch { /* no audio device: the other signals remain */ }
}

/** A new offer: `shown` says whether its card was put on screen. Sound and notification
 * only when the agent may not see it: not shown, or the page is in the background. */
export function alertOffer({ id, title, body, shown }) {
  const unseen = !shown || document.visibilityState !== "visible";
  if (!unseen) return;
  if (read("sound")) beep();
  if (read("notify") && notificationsAllowed()) {
    try {
      const n = new Notification(title, { body, tag: `cxbridge-${id}` });
      n.onclick = () => {
        window.focus();
        openConversation(id);
        n.close();
      };
    } catch { /* some browsers only allow notifications from a service worker */ }
  }
}
