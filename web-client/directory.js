// @ts-check
// The directory at `/`: what is live now and the replays of finished broadcasts, from
// `GET /api/rooms` (docs/protocol.md), refreshed every few seconds in place.

/**
 * @typedef {{ room: string, live: boolean, host: { name: string, source: string } | null,
 *             viewers: number, participants: number, started_at: string | null,
 *             hls?: { live: boolean, url: string } }} RoomEntry
 * @typedef {{ id: string, room: string, host: string, started_at: string, ended_at: string,
 *             duration_s: number, url: string }} ReplayEntry
 */

const REFRESH_MS = 2500;
const SOURCES = /** @type {Record<string, string>} */ ({ webrtc: 'meeting', rtmp: 'RTMP (OBS)', whip: 'WHIP' });

/**
 * Fills `container` with the directory and keeps it current until `stop()`.
 * @param {HTMLElement} container
 * @param {{ onJoin: (room: string) => void }} options
 */
export function mountDirectory(container, { onJoin }) {
  container.innerHTML = `
    <div class="directory">
      <section aria-labelledby="live-title">
        <h2 id="live-title">Live now</h2>
        <p class="directory-status" role="status" hidden></p>
        <ul class="directory-cards" data-list="rooms"></ul>
        <p class="directory-empty" data-empty="rooms" hidden>No live rooms. Start a meeting, or stream from OBS
          to <code class="rtmp-hint"></code> with the room name as stream key.</p>
      </section>
      <section aria-labelledby="replays-title">
        <h2 id="replays-title">Replays</h2>
        <ul class="directory-cards" data-list="replays"></ul>
        <p class="directory-empty" data-empty="replays" hidden>No replays yet: finished broadcasts appear here while they are kept.</p>
      </section>
    </div>`;
  const $ = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (container.querySelector(selector));
  const status = $('.directory-status');
  const roomList = $('[data-list="rooms"]');
  const replayList = $('[data-list="replays"]');
  $('.rtmp-hint').textContent = `rtmp://${location.hostname}:1935/live`;

  let stopped = false;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  let failures = 0;

  async function refresh() {
    try {
      const response = await fetch('/api/rooms', { cache: 'no-store' });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      failures = 0;
      status.hidden = true;
      render(body.rooms ?? [], body.replays ?? []);
    } catch (error) {
      failures += 1;
      status.hidden = false;
      status.textContent = `The server is unreachable (${/** @type {Error} */ (error).message}); retrying…`;
    }
    if (!stopped) timer = setTimeout(refresh, Math.min(REFRESH_MS * 2 ** Math.min(failures, 3), 20_000));
  }

  /**
   * @param {RoomEntry[]} rooms
   * @param {ReplayEntry[]} replays
   */
  function render(rooms, replays) {
    const live = rooms.filter((room) => room.participants > 0 || room.live);
    sync(roomList, live, (room) => room.room, 'room', roomCard);
    sync(replayList, replays, (replay) => replay.id, 'replay', replayCard);
    $('[data-empty="rooms"]').hidden = live.length > 0;
    $('[data-empty="replays"]').hidden = replays.length > 0;
  }

  /**
   * Updates the cards of `list` in place (focus and scroll survive a refresh).
   * @template T
   * @param {HTMLElement} list
   * @param {T[]} entries
   * @param {(entry: T) => string} key
   * @param {string} attribute
   * @param {(entry: T, card: HTMLLIElement) => void} fill
   */
  function sync(list, entries, key, attribute, fill) {
    const existing = new Map([...list.children].map((card) => [/** @type {HTMLElement} */ (card).dataset[attribute], card]));
    /** @type {Element | null} */
    let previous = null;
    for (const entry of entries) {
      const id = key(entry);
      let card = /** @type {HTMLLIElement | undefined} */ (existing.get(id));
      existing.delete(id);
      if (!card) {
        card = document.createElement('li');
        card.className = 'directory-card';
        card.dataset[attribute] = id;
      }
      fill(entry, card);
      const position = previous ? previous.nextElementSibling : list.firstElementChild;
      if (position !== card) list.insertBefore(card, position);
      previous = card;
    }
    for (const card of existing.values()) card.remove();
  }

  /** @param {string | null} iso */
  function relative(iso) {
    if (!iso) return '';
    const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 60) return 'started just now';
    if (seconds < 3600) return `started ${Math.floor(seconds / 60)} min ago`;
    return `started ${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min ago`;
  }

  /**
   * @param {HTMLElement} card
   * @param {string} key
   * @param {() => HTMLElement} create
   */
  function part(card, key, create) {
    let element = /** @type {HTMLElement | null} */ (card.querySelector(`[data-part="${key}"]`));
    if (!element) {
      element = create();
      element.dataset.part = key;
      card.append(element);
    }
    return element;
  }

  /** @param {RoomEntry} room @param {HTMLLIElement} card */
  function roomCard(room, card) {
    const title = part(card, 'title', () => document.createElement('h3'));
    title.textContent = room.room;
    const badge = part(card, 'badge', () => document.createElement('span'));
    badge.className = 'live-badge';
    badge.textContent = 'LIVE';
    badge.hidden = !room.live;
    const host = part(card, 'host', () => document.createElement('p'));
    host.textContent = room.host ? `${room.host.name} · ${SOURCES[room.host.source] ?? room.host.source}` : 'nobody is publishing yet';
    const counts = part(card, 'counts', () => document.createElement('p'));
    counts.className = 'directory-counts';
    const people = `${room.participants} ${room.participants === 1 ? 'participant' : 'participants'}`;
    counts.textContent = `${people} · ${room.viewers} ${room.viewers === 1 ? 'viewer' : 'viewers'}`;
    const started = part(card, 'started', () => document.createElement('p'));
    started.className = 'directory-started';
    started.textContent = relative(room.started_at);
    started.title = room.started_at ? new Date(room.started_at).toLocaleString() : '';
    const actions = part(card, 'actions', () => {
      const div = document.createElement('div');
      div.className = 'directory-actions';
      const join = document.createElement('button');
      join.type = 'button';
      join.className = 'btn btn-primary';
      join.textContent = 'Join';
      join.addEventListener('click', () => onJoin(card.dataset.room ?? ''));
      const watch = document.createElement('a');
      watch.className = 'btn';
      watch.textContent = 'Watch';
      div.append(join, watch);
      return div;
    });
    const join = /** @type {HTMLButtonElement} */ (actions.querySelector('button'));
    join.setAttribute('aria-label', `Join ${room.room}`);
    const watch = /** @type {HTMLAnchorElement} */ (actions.querySelector('a'));
    watch.href = `/watch/${encodeURIComponent(room.room)}`;
    watch.setAttribute('aria-label', `Watch ${room.room}`);
    watch.hidden = !room.host;
  }

  /** @param {ReplayEntry} replay @param {HTMLLIElement} card */
  function replayCard(replay, card) {
    const title = part(card, 'title', () => document.createElement('h3'));
    title.textContent = replay.room;
    const host = part(card, 'host', () => document.createElement('p'));
    host.textContent = replay.host;
    const when = part(card, 'when', () => document.createElement('p'));
    when.className = 'directory-started';
    const minutes = Math.floor(replay.duration_s / 60);
    const seconds = Math.round(replay.duration_s % 60);
    when.textContent = `${new Date(replay.started_at).toLocaleString()} · ${minutes} min ${seconds} s`;
    const play = /** @type {HTMLAnchorElement} */ (part(card, 'play', () => {
      const link = document.createElement('a');
      link.className = 'btn';
      link.textContent = 'Play replay';
      return link;
    }));
    play.href = `/watch/${encodeURIComponent(replay.room)}?replay=${encodeURIComponent(replay.id)}`;
    play.setAttribute('aria-label', `Play the replay of ${replay.room}`);
  }

  refresh();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
