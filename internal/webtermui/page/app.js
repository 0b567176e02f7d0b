// The web terminal page: pick a login, open a WebSocket to /ws on this
// origin, and run xterm.js on it. Binary messages carry the terminal's
// bytes both ways; text messages are JSON control messages.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const setState = (s) => { body.dataset.state = s; };

  // notice shows text in the notice box; http(s) URLs in it become links
  // (the approval page of a check rule).
  function notice(text, refused) {
    const box = $('notice');
    box.replaceChildren();
    box.classList.toggle('refused', !!refused);
    const re = /https?:\/\/[^\s)]+/g;
    let last = 0, m;
    while ((m = re.exec(text)) !== null) {
      box.append(document.createTextNode(text.slice(last, m.index)));
      const a = document.createElement('a');
      a.href = m[0];
      a.textContent = m[0];
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      box.append(a);
      last = m.index + m[0].length;
    }
    box.append(document.createTextNode(text.slice(last)));
    box.hidden = false;
  }
  const hideNotice = () => { $('notice').hidden = true; };
  const state = (text) => { $('state').textContent = text; };

  function open(user) {
    if (!user) return;
    $('picker').hidden = true;
    setState('opening');
    state('opening…');
    notice('Opening a terminal as ' + user + '…');
    const term = new Terminal({
      fontFamily: '"DejaVu Sans Mono", "Liberation Mono", ui-monospace, Menlo, Consolas, monospace',
      fontSize: 15,
      cursorBlink: true,
      allowProposedApi: true,
      scrollback: 5000,
      theme: { background: '#1b1d23', foreground: '#e6e6e6', cursor: '#9be29b', selectionBackground: '#3a5f9a' },
    });
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.loadAddon(new Unicode11Addon.Unicode11Addon());
    term.unicode.activeVersion = '11';
    term.open($('term'));
    fit.fit();
    window.sshmeshTerm = term; // for tests and the curious: the screen is term.buffer.active

    const q = new URLSearchParams({ user: user, token: body.dataset.token, cols: term.cols, rows: term.rows });
    const ws = new WebSocket('ws://' + location.host + '/ws?' + q);
    ws.binaryType = 'arraybuffer';
    const enc = new TextEncoder();
    let opened = false;
    const send = (data) => { if (opened && ws.readyState === WebSocket.OPEN) ws.send(data); };
    // Ctrl+Shift+C copies the selection and Ctrl+Shift+V pastes, as in
    // terminal emulators (Ctrl+C and Ctrl+V go to the program). The page is
    // plain http on the mesh, where the async clipboard API is not
    // offered: copy goes through xterm.js's copy event, paste through the
    // browser's own paste into xterm.js's textarea.
    term.attachCustomKeyEventHandler((e) => {
      if (!e.ctrlKey || !e.shiftKey || e.altKey || e.metaKey) return true;
      if (e.code === 'KeyC') {
        if (e.type === 'keydown' && term.hasSelection()) document.execCommand('copy');
        e.preventDefault();
        return false;
      }
      return e.code !== 'KeyV';
    });
    term.onData((d) => send(enc.encode(d)));
    term.onBinary((d) => send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 255)));
    term.onResize(({ cols, rows }) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ t: 'resize', cols: cols, rows: rows }));
    });
    new ResizeObserver(() => fit.fit()).observe($('term'));

    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') {
        term.write(new Uint8Array(ev.data));
        return;
      }
      const m = JSON.parse(ev.data);
      switch (m.t) {
        case 'banner':
          notice(m.text);
          state('waiting for approval');
          break;
        case 'refused':
          setState('refused');
          state('refused');
          notice(m.text, true);
          $('term').replaceChildren();
          term.dispose();
          $('picker').hidden = false; // another login may do
          break;
        case 'open': {
          opened = true;
          body.dataset.opened = m.session;
          hideNotice();
          setState('open');
          const as = $('as');
          as.replaceChildren(document.createTextNode('as '));
          const b = document.createElement('b');
          b.textContent = m.localUser;
          as.append(b);
          if (m.user !== m.localUser) as.append(document.createTextNode(' (login ' + m.user + ')'));
          $('state').replaceChildren();
          if (m.recorded) {
            const rec = document.createElement('span');
            rec.className = 'rec';
            rec.textContent = '● recorded';
            $('state').append(rec, document.createTextNode(' · '));
          }
          $('state').append(document.createTextNode(m.session));
          fit.fit();
          term.focus();
          break;
        }
        case 'exit':
          setState('exited');
          body.dataset.exit = m.signal ? 'signal ' + m.signal : String(m.status);
          state(m.signal ? 'ended by signal ' + m.signal : 'exited with status ' + m.status);
          break;
      }
    };
    ws.onclose = () => {
      if (body.dataset.state === 'open' || body.dataset.state === 'opening') {
        setState('closed');
        state('connection closed');
        if (!opened) notice('The connection closed before a terminal opened: reload the page to try again.', true);
      }
    };
  }

  for (const b of document.querySelectorAll('button.login')) {
    b.addEventListener('click', () => open(b.dataset.user));
  }
  $('other').addEventListener('submit', (e) => {
    e.preventDefault();
    open($('other-user').value.trim());
  });
})();
