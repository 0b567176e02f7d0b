package tailnet

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go4.org/mem"
	"tailscale.com/client/local"
	"tailscale.com/ipn"
	"tailscale.com/types/key"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

// watcher follows the netmap changes tsnet reports (the IPN bus) and, on
// each one, asks the node again about the callers of the open conns and
// about the node itself: a conn whose caller left the tailnet, expired or
// changed user or tags is marked gone (its PeerCurrent turns false, and the
// SSH server ends its sessions). Between changes it asks nothing.
type watcher struct {
	lc      *local.Client
	logger  *slog.Logger
	selfKey meshkey.Public

	mu    sync.Mutex
	conns map[*Conn]struct{}
	self  policy.Identity
	gen   uint64 // counts the netmap changes seen
}

// startWatcher subscribes to the IPN bus and reads its first message (the
// current netmap) within ctx, then follows it until run ends.
func startWatcher(ctx, run context.Context, lc *local.Client, logger *slog.Logger) (*watcher, error) {
	st, err := lc.StatusWithoutPeers(ctx)
	if err != nil {
		return nil, fmt.Errorf("tailnet: status: %w", err)
	}
	if st.Self == nil || st.Self.PublicKey.IsZero() {
		return nil, fmt.Errorf("tailnet: the node has no node key yet (state %s)", st.BackendState)
	}
	w := &watcher{lc: lc, logger: logger, selfKey: meshkey.Public(st.Self.PublicKey.Raw32()), conns: make(map[*Conn]struct{})}
	bus, err := w.subscribe(ctx, run)
	if err != nil {
		return nil, err
	}
	if err := w.refreshSelf(ctx); err != nil {
		bus.Close()
		return nil, err
	}
	go w.follow(run, bus)
	return w, nil
}

const busMask = ipn.NotifyInitialNetMap | ipn.NotifyPeerChanges

// subscribe watches the bus with run and reads its first message within ctx.
func (w *watcher) subscribe(ctx, run context.Context) (*local.IPNBusWatcher, error) {
	bus, err := w.lc.WatchIPNBus(run, busMask)
	if err != nil {
		return nil, fmt.Errorf("tailnet: watching the netmap: %w", err)
	}
	first := make(chan error, 1)
	go func() { _, err := bus.Next(); first <- err }()
	select {
	case err := <-first:
		if err != nil {
			bus.Close()
			return nil, fmt.Errorf("tailnet: watching the netmap: %w", err)
		}
	case <-ctx.Done():
		bus.Close()
		return nil, ctx.Err()
	}
	return bus, nil
}

// follow reads netmap changes until run ends, re-subscribing when the bus
// fails (re-checking every conn then, since changes may have been missed).
func (w *watcher) follow(run context.Context, bus *local.IPNBusWatcher) {
	for {
		n, err := bus.Next()
		if err != nil {
			bus.Close()
			if run.Err() != nil {
				return
			}
			w.logger.Warn("tailnet: netmap watch failed; subscribing again", "err", err)
			for bus == nil || err != nil {
				select {
				case <-run.Done():
					return
				case <-time.After(time.Second):
				}
				bus, err = w.subscribe(run, run)
			}
			w.changed(run)
			continue
		}
		if n.NetMap != nil || n.SelfChange != nil || len(n.PeersChanged) > 0 || len(n.PeersRemoved) > 0 ||
			len(n.PeerChangedPatch) > 0 || len(n.UserProfiles) > 0 {
			w.changed(run)
		}
	}
}

// changed re-checks the node itself and every open conn's caller.
func (w *watcher) changed(ctx context.Context) {
	w.mu.Lock()
	w.gen++
	conns := make([]*Conn, 0, len(w.conns))
	for c := range w.conns {
		conns = append(conns, c)
	}
	w.mu.Unlock()
	if err := w.refreshSelf(ctx); err != nil {
		w.logger.Warn("tailnet: cannot ask the node about itself", "err", err)
	}
	for _, c := range conns {
		w.recheck(ctx, c)
	}
}

// refreshSelf asks the node what the coordinator says about it now.
func (w *watcher) refreshSelf(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	who, err := w.lc.WhoIsNodeKey(ctx, key.NodePublicFromRaw32(memView(w.selfKey)))
	if err != nil {
		return fmt.Errorf("tailnet: whois of this node: %w", err)
	}
	id, err := identityOf(who, time.Now())
	if err != nil {
		return fmt.Errorf("tailnet: this node: %w", err)
	}
	w.mu.Lock()
	w.self = id
	w.mu.Unlock()
	return nil
}

// recheck asks the node about c's caller and marks c gone when the
// coordinator no longer says what it said when c was accepted, or when the
// node itself has changed since.
func (w *watcher) recheck(ctx context.Context, c *Conn) {
	if c.gone.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	who, err := w.lc.WhoIsNodeKey(ctx, key.NodePublicFromRaw32(memView(c.peer.Key)))
	reason := ""
	switch {
	case err == local.ErrPeerNotFound:
		reason = "the node left the tailnet"
	case err != nil:
		// The node could not answer: keep the conn, say so.
		w.logger.Warn("tailnet: cannot re-check a caller", "node", c.peer.Node, "err", err)
		return
	default:
		id, err := identityOf(who, time.Now())
		switch {
		case err != nil:
			reason = err.Error()
		case !sameIdentity(id, c.peer):
			reason = fmt.Sprintf("the coordinator now says owner %q, tags %v (was %q, %v)", id.Owner, id.Tags, c.peer.Owner, c.peer.Tags)
		default:
			c.setExpiry(who.Node.KeyExpiry)
		}
	}
	w.mu.Lock()
	self := w.self
	w.mu.Unlock()
	if reason == "" && !sameIdentity(self, c.self) {
		reason = fmt.Sprintf("this node's standing changed: owner %q, tags %v (was %q, %v)", self.Owner, self.Tags, c.self.Owner, c.self.Tags)
	}
	if reason != "" && !c.gone.Swap(true) {
		w.logger.Info("tailnet: caller no longer current", "node", c.peer.Node, "owner", c.peer.Owner, "tags", c.peer.Tags, "reason", reason)
	}
}

// track adds c to the conns re-checked on each change and returns the
// count of changes seen so far.
func (w *watcher) track(c *Conn) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.conns[c] = struct{}{}
	return w.gen
}

func (w *watcher) untrack(c *Conn) {
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
}

func (w *watcher) generation() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen
}

func (w *watcher) selfIdentity() policy.Identity {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.self
}

func memView(k meshkey.Public) mem.RO { return mem.B(k[:]) }
