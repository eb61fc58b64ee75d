// @ts-check
// The chat panel of the call page and the watch page: general messages, questions (a separate
// tab; hosts mark them answered and export them) and notices (hosts only), over the signaling
// socket (docs/protocol.md: `chat`, `chat_history`, `chat_message`, `question_updated`).
//
// The panel owns no socket: the page passes every server message to `handle()` and gives a
// `send()` for client messages. Text is always set with textContent, never parsed as HTML.

/**
 * @typedef {{ participant_id: number | null, name: string }} ChatSender
 * @typedef {{ id: number, kind: 'general' | 'question' | 'notice', text: string, sender: ChatSender,
 *             sent_at: string, answered: boolean | null, answered_by: string | null }} ChatMessage
 * @typedef {{ post: boolean, notice: boolean, moderate: boolean }} ChatPermissions
 * @typedef {{ type: string, [key: string]: any }} ServerMessage
 */

const MAX_CHARS = 500;
/** Errors that follow one of our chat actions within this long are the chat's to show. */
const ERROR_WINDOW_MS = 5000;
const CHAT_ERRORS = new Set(['rate_limited', 'bad_message', 'unknown_question', 'forbidden']);

/**
 * @param {{ send: (message: object) => boolean | void, room: string, exportUrl: string,
 *           token?: string | null }} options
 */
export function createChatPanel({ send, room, exportUrl, token = null }) {
  /** @type {Map<number, ChatMessage>} */
  const messages = new Map();
  /** @type {ChatPermissions} */
  let permissions = { post: false, notice: false, moderate: false };
  let visible = false;
  let unread = 0;
  let lastActionAt = 0;
  /** @type {(count: number) => void} */
  let onUnread = () => {};

  const element = document.createElement('section');
  element.className = 'chat';
  element.setAttribute('aria-label', 'Chat');
  element.innerHTML = `
    <div class="chat-tabs" role="tablist" aria-label="Chat views">
      <button type="button" role="tab" class="chat-tab" data-tab="chat" aria-selected="true" aria-controls="chat-list">Chat</button>
      <button type="button" role="tab" class="chat-tab" data-tab="questions" aria-selected="false" aria-controls="chat-questions">Questions <span class="chat-count"></span></button>
    </div>
    <div class="chat-pinned" aria-label="Notices"></div>
    <ol class="chat-list" id="chat-list" role="tabpanel" aria-live="polite" aria-label="Messages"></ol>
    <div class="chat-questions-panel" id="chat-questions" role="tabpanel" hidden>
      <div class="chat-export" hidden>
        <span>Export questions:</span>
        <button type="button" class="btn btn-small" data-export="json">JSON</button>
        <button type="button" class="btn btn-small" data-export="csv">CSV</button>
      </div>
      <ol class="chat-list chat-question-list" aria-live="polite" aria-label="Questions"></ol>
    </div>
    <form class="chat-composer">
      <fieldset class="chat-kinds">
        <legend class="visually-hidden">Message kind</legend>
        <label><input type="radio" name="chat-kind" value="general" checked> General</label>
        <label><input type="radio" name="chat-kind" value="question"> Question</label>
        <label class="chat-kind-notice" hidden><input type="radio" name="chat-kind" value="notice"> Notice</label>
      </fieldset>
      <label class="visually-hidden" for="chat-input">Message</label>
      <textarea id="chat-input" rows="2" maxlength="${MAX_CHARS}" placeholder="Write a message… (Enter sends, Shift+Enter for a new line)"></textarea>
      <div class="chat-composer-footer">
        <p class="chat-error" role="alert" hidden></p>
        <span class="chat-counter" aria-hidden="true"></span>
        <button type="submit" class="btn btn-primary btn-small">Send</button>
      </div>
      <p class="chat-readonly" hidden>Read-only: your access does not include chat.</p>
    </form>`;

  const $ = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (element.querySelector(selector));
  const list = $('.chat-list');
  const questionList = $('.chat-question-list');
  const questionsPanel = $('.chat-questions-panel');
  const pinned = $('.chat-pinned');
  const count = $('.chat-count');
  const form = /** @type {HTMLFormElement} */ ($('.chat-composer'));
  const input = /** @type {HTMLTextAreaElement} */ ($('textarea'));
  const counter = $('.chat-counter');
  const errorLine = $('.chat-error');
  const readonly = $('.chat-readonly');
  const noticeKind = $('.chat-kind-notice');
  const exportBar = $('.chat-export');
  const tabs = /** @type {HTMLButtonElement[]} */ ([...element.querySelectorAll('.chat-tab')]);

  for (const tab of tabs) {
    tab.addEventListener('click', () => selectTab(tab.dataset.tab ?? 'chat'));
    tab.addEventListener('keydown', (event) => {
      if (event.key !== 'ArrowRight' && event.key !== 'ArrowLeft') return;
      const next = tabs[(tabs.indexOf(tab) + 1) % tabs.length];
      selectTab(next.dataset.tab ?? 'chat');
      next.focus();
    });
  }
  /** @param {string} name */
  function selectTab(name) {
    for (const tab of tabs) tab.setAttribute('aria-selected', String(tab.dataset.tab === name));
    list.hidden = name !== 'chat';
    questionsPanel.hidden = name !== 'questions';
  }

  input.addEventListener('input', renderCounter);
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || !permissions.post) return;
    const checked = /** @type {HTMLInputElement | null} */ (form.querySelector('input[name="chat-kind"]:checked'));
    const kind = checked?.value ?? 'general';
    lastActionAt = Date.now();
    showError(null);
    if (send({ type: 'chat', kind, text }) === false) {
      showError('Not connected: the message was not sent.');
      return;
    }
    input.value = '';
    renderCounter();
  });
  for (const button of /** @type {HTMLButtonElement[]} */ ([...element.querySelectorAll('[data-export]')])) {
    button.addEventListener('click', () => exportQuestions(button.dataset.export ?? 'json'));
  }

  function renderCounter() {
    const used = [...input.value].length;
    counter.textContent = used > MAX_CHARS - 100 ? `${used}/${MAX_CHARS}` : '';
  }

  /** @param {string | null} text */
  function showError(text) {
    errorLine.textContent = text ?? '';
    errorLine.hidden = !text;
  }

  function renderPermissions() {
    form.querySelector('fieldset')?.toggleAttribute('disabled', !permissions.post);
    input.disabled = !permissions.post;
    /** @type {HTMLButtonElement} */ (form.querySelector('button[type="submit"]')).disabled = !permissions.post;
    readonly.hidden = permissions.post;
    noticeKind.hidden = !permissions.notice;
    exportBar.hidden = !permissions.moderate;
    for (const message of messages.values()) if (message.kind === 'question') renderMessage(message);
  }

  /** @param {string} iso */
  function timeOf(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? '' : date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  /** @param {ChatMessage} message */
  function buildItem(message) {
    const item = document.createElement('li');
    item.className = `chat-message chat-${message.kind}`;
    item.dataset.messageId = String(message.id);
    item.dataset.kind = message.kind;
    if (message.kind === 'question') item.dataset.answered = String(Boolean(message.answered));
    const header = document.createElement('div');
    header.className = 'chat-meta';
    const who = document.createElement('span');
    who.className = 'chat-sender';
    who.textContent = message.sender?.name ?? 'someone';
    const when = document.createElement('time');
    when.dateTime = message.sent_at;
    when.textContent = timeOf(message.sent_at);
    header.append(who, when);
    if (message.kind !== 'general') {
      const badge = document.createElement('span');
      badge.className = 'chat-badge';
      badge.textContent = message.kind === 'notice' ? 'Notice'
        : message.answered ? `Answered${message.answered_by ? ` by ${message.answered_by}` : ''}` : 'Question';
      header.append(badge);
    }
    const body = document.createElement('p');
    body.className = 'chat-text';
    body.textContent = message.text;
    item.append(header, body);
    if (message.kind === 'question' && permissions.moderate) {
      const toggle = document.createElement('button');
      toggle.type = 'button';
      toggle.className = 'btn btn-small';
      toggle.textContent = message.answered ? 'Reopen' : 'Mark answered';
      toggle.setAttribute('aria-label', `${toggle.textContent}: ${message.text}`);
      toggle.addEventListener('click', () => {
        lastActionAt = Date.now();
        send({ type: 'answer_question', id: message.id, answered: !message.answered });
      });
      item.append(toggle);
    }
    return item;
  }

  /** Places (or replaces) a message's items in the lists it belongs to, in id order. */
  /** @param {ChatMessage} message */
  function renderMessage(message) {
    for (const old of element.querySelectorAll(`[data-message-id="${message.id}"]`)) old.remove();
    insertOrdered(list, buildItem(message), message.id);
    if (message.kind === 'question') insertOrdered(questionList, buildItem(message), message.id);
    if (message.kind === 'notice') {
      pinned.replaceChildren(buildItem(message));
      pinned.firstElementChild?.classList.add('chat-pinned-notice');
    }
    const open = [...messages.values()].filter((m) => m.kind === 'question' && !m.answered).length;
    count.textContent = open ? `(${open} open)` : '';
  }

  /**
   * @param {HTMLElement} target
   * @param {HTMLElement} item
   * @param {number} id
   */
  function insertOrdered(target, item, id) {
    const atBottom = target.scrollHeight - target.scrollTop - target.clientHeight < 40;
    const after = [...target.children].find((child) => Number(/** @type {HTMLElement} */ (child).dataset.messageId) > id);
    target.insertBefore(item, after ?? null);
    if (atBottom) target.scrollTop = target.scrollHeight;
  }

  /** @param {string} format */
  async function exportQuestions(format) {
    try {
      const response = await fetch(`${exportUrl}?format=${format}`, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
      });
      if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
      const blob = await response.blob();
      const link = document.createElement('a');
      link.href = URL.createObjectURL(blob);
      link.download = `${room}-questions.${format}`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    } catch (error) {
      showError(`Export failed: ${/** @type {Error} */ (error).message}`);
    }
  }

  return {
    element,
    /**
     * Consumes the chat's server messages; returns whether it did.
     * @param {ServerMessage} message
     */
    handle(message) {
      switch (message.type) {
        case 'chat_history': {
          messages.clear();
          list.replaceChildren();
          questionList.replaceChildren();
          pinned.replaceChildren();
          permissions = message.permissions ?? permissions;
          for (const item of message.messages ?? []) messages.set(item.id, item);
          renderPermissions();
          for (const item of [...messages.values()].sort((a, b) => a.id - b.id)) renderMessage(item);
          return true;
        }
        case 'chat_message':
        case 'question_updated': {
          const item = /** @type {ChatMessage} */ (message.message);
          const known = messages.has(item.id);
          messages.set(item.id, item);
          renderMessage(item);
          if (message.type === 'chat_message' && !known && !visible) {
            unread += 1;
            onUnread(unread);
          }
          return true;
        }
        case 'error':
          if (CHAT_ERRORS.has(message.code) && Date.now() - lastActionAt < ERROR_WINDOW_MS) {
            showError(message.message);
            return true;
          }
          return false;
        default:
          return false;
      }
    },
    /** @param {ChatPermissions} next */
    setPermissions(next) {
      permissions = next;
      renderPermissions();
    },
    /** @param {(count: number) => void} listener */
    setUnreadListener(listener) {
      onUnread = listener;
    },
    /** The panel is shown (unread messages count as read) or hidden. @param {boolean} shown */
    setVisible(shown) {
      visible = shown;
      if (shown && unread) {
        unread = 0;
        onUnread(0);
      }
    },
    /** Every message, oldest first (tests and debugging). */
    get messages() {
      return [...messages.values()].sort((a, b) => a.id - b.id);
    },
  };
}
