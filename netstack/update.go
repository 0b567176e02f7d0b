package netstack

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net/netip"

	"github.com/sshmesh/sshmesh/meshkey"
	"strings"
)

// This file reads a running node's wg-quick file again after a change
// (a reload), parsing only the [Peer] sections whose bytes changed: with
// 100,000 peers, parsing and checking the sections that did not change
// was most of the work of a reload that changes one peer.
//
// The node remembers a digest of each [Peer] section its peers came from
// (Node.sections, by index in Node.peers). A new version of the file is
// cut into sections at its header lines; the run of sections at its start
// and the run at its end whose digests match the node's, in order, are the
// node's peers as they are (a section naming its Endpoint by host name
// never matches: its name is resolved anew). The sections between are
// parsed as ParseConfig parses them, and what ParseConfig checks across
// the whole file (a peer listed twice, a prefix in two peers) is checked
// for them: against each other by the parser, against the unchanged peers
// through the node's own index of keys (Node.byKey) and prefixes
// (Node.settled). Errors name the file and line as ParseConfig's do.

// sectionSum identifies the bytes of a [Peer] section: a digest with a
// key made when the process starts, and the length. The zero value
// matches no section. Whoever writes the file decides the peers anyway,
// so a digest collision (chance 2^-64 per pair of sections, the key
// unknown outside the process) gives nobody anything new.
type sectionSum struct {
	h uint64
	n int
}

var sectionSeed = maphash.MakeSeed()

func sumSection(b []byte) sectionSum { return sectionSum{maphash.Bytes(sectionSeed, b), len(b)} }

// fileSums are the [Peer] section digests of a parsed file, by index in
// its Config.Peers, and a digest of those peers as parsed: New takes the
// section digests only while the peers are still the ones parsed.
type fileSums struct {
	sums  []sectionSum
	print uint64
}

// peersPrint digests what a peer list says.
func peersPrint(peers []Peer) uint64 {
	var h maphash.Hash
	h.SetSeed(sectionSeed)
	var buf []byte
	addr := func(a [16]byte, is4 bool, n uint64) {
		buf = append(buf, a[:]...)
		if is4 {
			buf = append(buf, 4)
		} else {
			buf = append(buf, 6)
		}
		buf = binary.LittleEndian.AppendUint64(buf, n)
	}
	for _, p := range peers {
		buf = append(buf[:0], p.PublicKey[:]...)
		buf = append(buf, p.PresharedKey[:]...)
		addr(p.Endpoint.Addr().As16(), p.Endpoint.Addr().Is4(), uint64(p.Endpoint.Port())<<1|b2u(p.Endpoint.IsValid()))
		buf = binary.LittleEndian.AppendUint64(buf, uint64(p.PersistentKeepalive))
		buf = binary.LittleEndian.AppendUint64(buf, uint64(len(p.AllowedIPs)))
		for _, a := range p.AllowedIPs {
			addr(a.Addr().As16(), a.Addr().Is4(), uint64(a.Bits()+1)<<1|b2u(a.IsValid()))
		}
		h.Write(buf)
	}
	return h.Sum64()
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// section is a part of a wg-quick file: from a header line ([...]) to the
// next one, or the lines before the first header.
type section struct {
	start, end int  // byte offsets
	line       int  // the 1-based line it starts at
	peer       bool // a [Peer] section
}

// splitSections cuts data at the lines the parser takes for section
// headers (a line whose text before any "#", trimmed, starts with "[").
// The first section is what comes before the first header, maybe nothing.
func splitSections(data []byte) []section {
	secs := make([]section, 1, bytes.Count(data, []byte("["))+1) // every header has a "["
	secs[0].line = 1
	for pos := 0; pos < len(data); {
		i := bytes.IndexByte(data[pos:], '[')
		if i < 0 {
			break
		}
		i += pos
		ls := bytes.LastIndexByte(data[:i], '\n') + 1
		le := len(data)
		if j := bytes.IndexByte(data[i:], '\n'); j >= 0 {
			le = i + j
		}
		pos = le + 1
		text, _, _ := bytes.Cut(data[ls:le], []byte("#"))
		text = bytes.TrimSpace(text)
		if len(text) == 0 || text[0] != '[' {
			continue
		}
		last := &secs[len(secs)-1]
		last.end = ls
		peer := text[len(text)-1] == ']' && strings.EqualFold(string(bytes.TrimSpace(text[1:len(text)-1])), "peer")
		secs = append(secs, section{start: ls, line: last.line + bytes.Count(data[last.start:ls], []byte("\n")), peer: peer})
	}
	secs[len(secs)-1].end = len(data)
	return secs
}

// maxLine is the longest line the parser takes (with its newline).
const maxLine = 1 << 20

// trackedPeer is a peer a tracking parser read: its index in the file,
// where its PublicKey is and where each of its AllowedIPs is.
type trackedPeer struct {
	idx  int
	keys []keyAt // every PublicKey line (the last one counts)
	pfx  []keyAt
}

// keyAt is a line of a file (and the 1-based index of an item in its
// list, 0 for none) and its key as written there; pub is the public key a
// PublicKey line gives.
type keyAt struct {
	line, item int
	key        string
	pub        meshkey.Public
}

// pos orders the places of a file where ParseConfig finds problems.
func (a keyAt) pos() int { return a.line<<20 | min(a.item, 1<<20-1) }

// parsedFile is a wg-quick file parsed by parseFile.
type parsedFile struct {
	p *parser
	// errAt is where parsing stopped at an error (keyAt.pos): where the
	// parser was (ParseConfig would have found every problem before it
	// first), or math.MaxInt for a check of the whole file at its end.
	errAt int
	// all are the file's sections; peerSecs the indexes in all of its
	// [Peer] sections, in order (not a copy of them: 4 bytes a peer, not 32).
	all      []section
	peerSecs []int32
	sums     []sectionSum // their digests
	// The peers [0, pre) and [len-suf, len) are the base's, unchanged.
	pre, suf int
}

// sec returns the file's [Peer] section k.
func (f *parsedFile) sec(k int) section { return f.all[f.peerSecs[k]] }

// peerBase is the node's peer set a file is parsed against: its peers
// (their records and states, by index) and the digests of the sections
// they came from.
type peerBase struct {
	recs   []peerRec
	states []*peerState
	sums   []sectionSum
}

// parseFile parses the wg-quick file data as ParseConfig does. With a base
// whose section digests are known, the [Peer] sections at the start and
// the end of the file that match the base's are its peers, not parsed
// again; the parser then tracks the peers it reads, and checks their keys
// and prefixes against each other only.
func parseFile(data []byte, name string, base *peerBase) (*parsedFile, error) {
	f := &parsedFile{p: &parser{name: name, cfg: new(Config)}}
	all := splitSections(data)
	nPeers := 0
	for _, s := range all {
		nPeers += b2i(s.peer)
	}
	f.all, f.peerSecs, f.sums = all, make([]int32, 0, nPeers), make([]sectionSum, 0, nPeers)
	if base == nil || base.sums == nil { // every section parsed: the maps are made once, at their size
		f.p.peerAt, f.p.owner = make(map[meshkey.Public]int, nPeers), make(map[netip.Prefix]int, nPeers)
	}
	for si, s := range all {
		if s.peer {
			f.peerSecs = append(f.peerSecs, int32(si))
			f.sums = append(f.sums, sumSection(data[s.start:s.end]))
		}
	}
	if base != nil && base.sums != nil {
		f.p.track = true
		f.pre, f.suf = alignSums(f.sums, base.sums)
	}
	f.p.cfg.Peers = make([]Peer, 0, nPeers-f.pre-f.suf) // the peers parsed
	p := f.p
	k := 0 // index of the next [Peer] section
	fail := func(line int, err error) (*parsedFile, error) {
		f.errAt = math.MaxInt
		if line != math.MaxInt {
			f.errAt = keyAt{line: line, item: p.item}.pos()
		}
		if p.inPeer && p.track { // what it has read of the peer counts too
			p.tracked = append(p.tracked, trackedPeer{idx: p.skipped + len(p.cfg.Peers), keys: p.keysAt, pfx: p.pfxAt})
			p.cfg.Peers = append(p.cfg.Peers, p.peer)
		}
		return f, err
	}
	for si, s := range all {
		if s.peer && (k < f.pre || k >= len(f.peerSecs)-f.suf) {
			p.item = 0
			if err := p.endPeer(); err != nil {
				return fail(s.line, err)
			}
			p.skipped++ // the update takes it from the base: not in p.cfg.Peers
			k++
			continue
		}
		p.line = s.line - 1
		for rest := data[s.start:s.end]; len(rest) > 0; {
			line, after, found := bytes.Cut(rest, []byte("\n"))
			p.line++
			if len(line)+b2i(found) > maxLine {
				return fail(p.line, &ConfigError{File: name, Line: p.line, Err: bufio.ErrTooLong})
			}
			line = bytes.TrimSuffix(line, []byte("\r"))
			if err := p.parseLine(string(line)); err != nil {
				return fail(p.line, err)
			}
			rest = after
		}
		if s.peer {
			p.item = 0
			if err := p.endPeer(); err != nil {
				next := math.MaxInt // where ParseConfig would end the peer: the next header, or the end
				if si+1 < len(all) {
					next = all[si+1].line
				}
				return fail(next, err)
			}
			if p.lastResolved || p.lastMultiKey {
				// Resolved anew every time; or a key the node does not
				// index (ParseConfig checks every PublicKey line's).
				f.sums[k] = sectionSum{}
			}
			k++
		}
	}
	if err := p.endPeer(); err != nil {
		return fail(math.MaxInt, err)
	}
	if !p.sawInterface {
		return fail(math.MaxInt, &ConfigError{File: name, Err: errors.New("no [Interface] section")})
	}
	if p.cfg.PrivateKey.IsZero() {
		return fail(math.MaxInt, &ConfigError{File: name, Line: p.interfaceLine, Key: "PrivateKey", Err: errors.New("missing in [Interface]")})
	}
	return f, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// alignSums returns how many digests at the start of sums and at the end
// match base's, in order (together at most the shorter list).
func alignSums(sums, base []sectionSum) (pre, suf int) {
	n := min(len(sums), len(base))
	for pre < n && sums[pre] == base[pre] && sums[pre].n != 0 {
		pre++
	}
	for suf < n-pre && sums[len(sums)-1-suf] == base[len(base)-1-suf] && base[len(base)-1-suf].n != 0 {
		suf++
	}
	return pre, suf
}

// ConfigUpdate is a node's wg-quick file read again, by [Node.ParseUpdate],
// for [Node.ApplyUpdate].
type ConfigUpdate struct {
	// Config is what the file says of the node itself ([Interface]);
	// its Peers are nil (ApplyUpdate takes them).
	Config Config
	// Warnings are ParseConfig's warnings for the file.
	Warnings []string
	// Parsed is how many [Peer] sections were parsed; the others were
	// the same as the ones the node's peers came from.
	Parsed int

	name string
	// The file's peers are base's first pre peers, then mid (the ones
	// parsed), then base's last suf peers: the peers taken unchanged are
	// not copied (with 100,000 peers, a list of them all was 13 MB more
	// during a reload).
	base     peerBase
	pre, suf int
	mid      []Peer
	sums     []sectionSum
	used     bool // by ApplyUpdate
}

// NumPeers returns the number of peers the file lists.
func (u *ConfigUpdate) NumPeers() int { return u.len() }

func (u *ConfigUpdate) len() int { return u.pre + len(u.mid) + u.suf }

// at returns the file's peer i; a peer taken from the base has the
// node's allowed IPs, not a copy.
func (u *ConfigUpdate) at(i int) Peer {
	j := i // the base's index
	switch {
	case i >= u.pre && i < u.pre+len(u.mid):
		return u.mid[i-u.pre]
	case i >= u.pre:
		j = i - u.len() + len(u.base.recs)
	}
	return u.base.recs[j].peer(u.base.states[j].key)
}

// ParseUpdate parses data, a new version of the wg-quick file the node's
// peers came from (through [ParseConfig] and [New], or an earlier
// ApplyUpdate), and returns it for [Node.ApplyUpdate]. It parses only the
// [Peer] sections that differ from the ones the node's peers came from,
// and checks the rest of the file against the node's own index of keys
// and prefixes: the errors are ParseConfig's, a *[ConfigError] naming
// name, line and key. When the node's peers came from elsewhere
// ([Node.SetPeers]), it parses the whole file.
func (n *Node) ParseUpdate(data []byte, name string) (*ConfigUpdate, error) {
	for {
		n.mu.Lock()
		base, gen := peerBase{recs: n.peers, states: n.stateAt, sums: n.sections}, n.gen
		n.mu.Unlock()
		f, perr := parseFile(data, name, &base)
		n.mu.Lock()
		if n.gen != gen { // the peers changed meanwhile
			n.mu.Unlock()
			continue
		}
		bound := math.MaxInt
		if perr != nil {
			bound = f.errAt
		}
		// A clash with an unchanged peer before the parse error is the
		// error ParseConfig would report.
		err := n.checkUnchanged(f, data, len(base.recs), bound)
		n.mu.Unlock()
		if err == nil {
			err = perr
		}
		if err != nil {
			return nil, err
		}
		u := &ConfigUpdate{Config: *f.p.cfg, Warnings: f.p.warnings, Parsed: len(f.peerSecs) - f.pre - f.suf, name: name,
			base: base, pre: f.pre, suf: f.suf, mid: f.p.cfg.Peers, sums: f.sums}
		u.Config.Peers = nil
		return u, nil
	}
}

// peer returns the peer of f that t tracks: f.p.cfg.Peers holds only the
// peers parsed, after the base's first f.pre.
func (f *parsedFile) peer(t trackedPeer) Peer { return f.p.cfg.Peers[t.idx-f.pre] }

// checkUnchanged checks the keys and prefixes of the peers f parsed
// against those of the peers it took unchanged from the node (mu is held,
// the node's peers are f's base, of which there are nOld). Of the clashes
// ParseConfig would report before line bound, it returns the first.
func (n *Node) checkUnchanged(f *parsedFile, data []byte, nOld, bound int) error {
	if f.pre+f.suf == 0 {
		return nil
	}
	// The new index of the node's peer j, or -1 when f parsed its place.
	newIndex := func(j int) int {
		switch {
		case j < f.pre:
			return j
		case j >= nOld-f.suf:
			return j - nOld + len(f.peerSecs)
		}
		return -1
	}
	var first *ConfigError
	firstAt := bound
	note := func(err *ConfigError, at int) {
		if at < firstAt {
			first, firstAt = err, at
		}
	}
	p := f.p
	for _, t := range p.tracked {
		peer := f.peer(t)
		for i, k := range t.keys {
			if ps := n.byKey.get(k.pub); ps != nil {
				if o := newIndex(int(ps.idx)); o >= 0 {
					note(f.clash(data, t, o, -1-i, func(at int) string {
						return fmt.Sprintf("peer %s is also the [Peer] at line %d", k.pub.Short(), at)
					}))
				}
			}
		}
		for i, a := range peer.AllowedIPs {
			m := a.Masked()
			ps, ok := n.settled.owner(m)
			if !ok || ps == nil {
				continue
			}
			if o := newIndex(int(ps.idx)); o >= 0 {
				note(f.clash(data, t, o, i, func(at int) string {
					return fmt.Sprintf("%v is also in the [Peer] at line %d; WireGuard routes a prefix to one peer", m, at)
				}))
			}
		}
	}
	if first == nil {
		return nil
	}
	return first
}

// clash is the error for the parsed peer t and the unchanged peer o
// sharing t's prefix pfx, or the key of t's PublicKey line -1-pfx: at the
// later of the two, as ParseConfig reports it, naming the other's [Peer]
// line.
func (f *parsedFile) clash(data []byte, t trackedPeer, o, pfx int, msg func(at int) string) (*ConfigError, int) {
	tHead, oHead := f.sec(t.idx).line, f.sec(o).line
	var at keyAt
	if pfx >= 0 {
		at = t.pfx[pfx]
	} else {
		at = t.keys[-1-pfx]
	}
	if oHead < tHead {
		return &ConfigError{File: f.p.name, Line: at.line, Key: at.key, Err: errors.New(msg(oHead))}, at.pos()
	}
	// The unchanged peer is the later one: find its line by parsing its
	// section alone.
	at = keyAt{line: oHead, key: at.key}
	s := f.sec(o)
	q := &parser{name: f.p.name, cfg: new(Config), track: true, line: s.line - 1}
	for rest := data[s.start:s.end]; len(rest) > 0; {
		l, after, _ := bytes.Cut(rest, []byte("\n"))
		q.line++
		if q.parseLine(string(bytes.TrimSuffix(l, []byte("\r")))) != nil {
			break
		}
		rest = after
	}
	if q.endPeer() == nil && len(q.tracked) == 1 && len(q.tracked[0].keys) == 1 {
		ot := q.tracked[0]
		at = ot.keys[0]
		if pfx >= 0 {
			m := f.peer(t).AllowedIPs[pfx].Masked()
			for i, a := range q.cfg.Peers[0].AllowedIPs {
				if a.Masked() == m {
					at = ot.pfx[i]
					break
				}
			}
		}
	}
	return &ConfigError{File: f.p.name, Line: at.line, Key: at.key, Err: errors.New(msg(tHead))}, at.pos()
}

// ApplyUpdate makes the peers of u, from [Node.ParseUpdate], the node's
// peer set, as [Node.UpdatePeers] does (the same checks, the same
// guarantees); the peers whose sections did not change are not looked at
// again. It uses u up: u cannot be applied twice, not even after an error.
func (n *Node) ApplyUpdate(u *ConfigUpdate) (PeerChanges, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isClosed {
		return PeerChanges{}, ErrClosed
	}
	if u.used {
		return PeerChanges{}, errors.New("netstack: ApplyUpdate: this update was applied already; parse the file again")
	}
	u.used = true
	d, err := n.diffPeers(u.name+": peers", u, false)
	if err != nil {
		return PeerChanges{}, err
	}
	ch, err := n.applyDiff(d)
	if err == nil {
		n.sections = u.sums
	}
	return ch, err
}
