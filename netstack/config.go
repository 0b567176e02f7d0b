package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
)

// Config describes a mesh node: its key, its mesh addresses, its UDP socket
// and its peers. [ParseConfig] reads one from a wg-quick file.
type Config struct {
	// PrivateKey is the node's WireGuard private key. Required.
	PrivateKey meshkey.Private

	// Addresses are the node's own mesh addresses (IPv4 and/or IPv6); only
	// the address part is used. At least one is required.
	Addresses []netip.Prefix

	// ListenPort is the UDP port; 0 picks a free one (see [Node.ListenPort]).
	ListenPort uint16

	// BindAddress is the local IP the UDP socket binds to; the zero value
	// binds to all addresses of both families. On Linux that is one
	// dual-stack socket whose replies leave from the address the kernel's
	// route picks, not necessarily the one a peer wrote to: on a
	// multi-homed host behind a strict firewall, set BindAddress.
	// Elsewhere it is wireguard-go's standard sockets.
	BindAddress netip.Addr

	// MTU is the mesh interface's MTU; 0 means 1420, WireGuard's default.
	MTU int

	// DisableGRO turns off the coalescing of received TCP segments. By
	// default, the segments of a flow within one batch the WireGuard
	// device hands over are merged into one large segment before the
	// in-process stack sees them: fewer, larger packets through the
	// stack. Segments of two flows, and so of two peers, never merge.
	DisableGRO bool

	// Peers are the node's peers. No prefix may appear in two peers'
	// AllowedIPs.
	Peers []Peer

	// Logger receives the node's log; nil discards it. Private keys are
	// never logged.
	Logger *slog.Logger

	// file is set by ParseConfig: the digests of the file's [Peer]
	// sections, so that the node can tell which ones a later version of
	// the file changes (see Node.ParseUpdate).
	file *fileSums
}

// Peer is a WireGuard peer of a node.
type Peer struct {
	// PublicKey is the peer's key and identity. Required.
	PublicKey meshkey.Public

	// PresharedKey is an optional symmetric key mixed into the handshake;
	// the zero value means none. It prints redacted, like a private key.
	PresharedKey meshkey.Private

	// AllowedIPs are the mesh source addresses the peer may use and the
	// destinations routed to it. Nil allows nothing.
	AllowedIPs []netip.Prefix

	// Endpoint is the peer's UDP address; the zero value means none known:
	// the peer must contact this node first.
	Endpoint netip.AddrPort

	// PersistentKeepalive is the keepalive interval, rounded down to whole
	// seconds; 0 turns keepalives off.
	PersistentKeepalive time.Duration
}

// ConfigError is a problem in a configuration file, at a line and key.
type ConfigError struct {
	File string // the name given to ParseConfig, or the path
	Line int    // 1-based; 0 when the problem is the file as a whole
	Key  string // the key as written, or "" for a line that is no key
	Err  error  // what is wrong; never contains a private key
}

// Error returns "file:line: Key: problem".
func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying problem.
func (e *ConfigError) Unwrap() error { return e.Err }

// osOnlyKeys are [Interface] keys that only wg-quick uses, to set up the
// OS; an in-process node has nothing to do with them.
var osOnlyKeys = []string{"DNS", "Table", "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig", "FwMark"}

// LoadConfig reads the wg-quick file at path; see [ParseConfig]. The
// Config goes to [New] as it is.
func LoadConfig(path string) (Config, []string, error) {
	data, err := os.ReadFile(path) // at the file's size: no copies as it grows
	if err != nil {
		return Config{}, nil, fmt.Errorf("netstack: %w", err)
	}
	return ParseConfigBytes(data, path)
}

// ParseConfig reads a WireGuard configuration in the wg-quick file format.
// name is used in messages (usually the file's path).
//
// [Interface] takes PrivateKey, Address, ListenPort and MTU; [Peer] takes
// PublicKey, PresharedKey, AllowedIPs, Endpoint (IP:port, [IPv6]:port, or
// host:port, the name resolved once while parsing, as `wg setconf` does) and PersistentKeepalive (seconds or "off"). Keys are
// case-insensitive, "#" starts a comment, Address and AllowedIPs take
// comma-separated lists and may repeat, and an address or allowed IP
// without a length means a single host. The keys wg-quick uses only for the
// OS (DNS, Table, PreUp, PostUp, PreDown, PostDown, SaveConfig, FwMark) are
// ignored, with a warning "file:line: ..." each. Anything else unknown or
// malformed is a *[ConfigError] naming file, line and key; so are a prefix
// in two peers' AllowedIPs and a peer listed twice, which [New] would
// refuse.
func ParseConfig(r io.Reader, name string) (Config, []string, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Config{}, nil, &ConfigError{File: name, Err: err}
	}
	return ParseConfigBytes(data, name)
}

// ParseConfigBytes is [ParseConfig] for a file already read: data is
// parsed where it is, not copied (a file of 100,000 peers is about 10 MB),
// and not kept.
func ParseConfigBytes(data []byte, name string) (Config, []string, error) {
	f, err := parseFile(data, name, nil)
	if err != nil {
		return Config{}, nil, err
	}
	cfg := *f.p.cfg
	cfg.file = &fileSums{sums: f.sums, print: peersPrint(cfg.Peers)}
	return cfg, f.p.warnings, nil
}

type parser struct {
	name          string
	cfg           *Config
	warnings      []string
	line          int
	section       string // "", "interface" or "peer"
	sawInterface  bool
	interfaceLine int
	peer          Peer // the [Peer] being read, when inPeer
	inPeer        bool
	peerLine      int
	// owner maps each AllowedIPs prefix (masked) read so far to the line
	// of the [Peer] that has it, and peerAt each PublicKey to its line:
	// a prefix in two peers, or a peer listed twice, is an error at the
	// second one's line, as [New] and [Node.SetPeers] would refuse it.
	owner  map[netip.Prefix]int
	peerAt map[meshkey.Public]int
	// With track set, the parser notes, for each peer it reads, the lines
	// of its PublicKey and of each of its AllowedIPs (see parseFile).
	track   bool
	tracked []trackedPeer
	skipped int // peers of the file not parsed, before the ones parsed (see parseFile)
	keysAt  []keyAt
	pfxAt   []keyAt
	nKeys   int // PublicKey lines in the [Peer] being read
	item    int // 1-based index of the list item being read in the line, 0 outside a list
	// resolved is set when the [Peer] being read names its Endpoint by
	// host name; lastResolved says it of the last peer ended, and
	// lastMultiKey that it had more than one PublicKey line.
	resolved, lastResolved, lastMultiKey bool
}

func (p *parser) errorf(key, format string, args ...any) error {
	return &ConfigError{File: p.name, Line: p.line, Key: key, Err: fmt.Errorf(format, args...)}
}

func (p *parser) wrap(key string, err error) error {
	return &ConfigError{File: p.name, Line: p.line, Key: key, Err: err}
}

func (p *parser) endPeer() error {
	if !p.inPeer {
		return nil
	}
	if p.peer.PublicKey.IsZero() {
		return &ConfigError{File: p.name, Line: p.peerLine, Key: "PublicKey", Err: errors.New("missing in [Peer]")}
	}
	if p.track {
		p.tracked = append(p.tracked, trackedPeer{idx: p.skipped + len(p.cfg.Peers), keys: p.keysAt, pfx: p.pfxAt})
	}
	p.cfg.Peers = append(p.cfg.Peers, p.peer)
	p.peer, p.inPeer = Peer{}, false
	p.lastMultiKey = p.nKeys > 1
	p.keysAt, p.pfxAt, p.nKeys = nil, nil, 0
	p.lastResolved, p.resolved = p.resolved, false
	return nil
}

func (p *parser) parseLine(raw string) error {
	p.item = 0
	line, _, _ := strings.Cut(raw, "#")
	line = strings.TrimSpace(line)
	if line == "" {
		return nil
	}
	if strings.HasPrefix(line, "[") {
		if !strings.HasSuffix(line, "]") {
			return p.errorf("", "section header %q lacks its closing ]", line)
		}
		if err := p.endPeer(); err != nil {
			return err
		}
		switch sec := strings.TrimSpace(line[1 : len(line)-1]); strings.ToLower(sec) {
		case "interface":
			p.section = "interface"
			if !p.sawInterface {
				p.sawInterface, p.interfaceLine = true, p.line
			}
		case "peer":
			p.section = "peer"
			p.peer, p.inPeer, p.peerLine = Peer{}, true, p.line
		default:
			return p.errorf("", "unknown section [%s]; want [Interface] or [Peer]", sec)
		}
		return nil
	}
	key, value, ok := strings.Cut(line, "=")
	key, value = strings.TrimSpace(key), strings.TrimSpace(value)
	if !ok || key == "" {
		return p.errorf("", "want Key = Value, a [Section] or a # comment")
	}
	switch p.section {
	case "interface":
		return p.interfaceKey(key, value)
	case "peer":
		return p.peerKey(key, value)
	default:
		return p.errorf(key, "outside any section; put it under [Interface] or [Peer]")
	}
}

func (p *parser) interfaceKey(key, value string) error {
	switch lowerKey(key) {
	case "privatekey":
		k, err := meshkey.ParsePrivate(value) // its errors never echo the key
		if err != nil {
			return p.wrap(key, err)
		}
		p.cfg.PrivateKey = k
	case "address":
		return p.list(key, value, func(s string) error {
			pfx, err := parsePrefix(s)
			if err != nil {
				return p.errorf(key, "%q is not an IP address or prefix", s)
			}
			p.cfg.Addresses = append(p.cfg.Addresses, pfx)
			return nil
		})
	case "listenport":
		n, err := strconv.ParseUint(value, 10, 16)
		if err != nil {
			return p.errorf(key, "%q is not a port number (0-65535)", value)
		}
		p.cfg.ListenPort = uint16(n)
	case "mtu":
		n, err := strconv.Atoi(value)
		if err != nil || n < minMTU || n > maxMTU {
			return p.errorf(key, "%q is not an MTU (%d-%d)", value, minMTU, maxMTU)
		}
		p.cfg.MTU = n
	default:
		for _, os := range osOnlyKeys {
			if strings.EqualFold(key, os) {
				p.warnings = append(p.warnings, fmt.Sprintf("%s:%d: %s is used only by wg-quick to set up the OS; ignored", p.name, p.line, key))
				return nil
			}
		}
		if isPeerKey(key) {
			return p.errorf(key, "belongs in a [Peer] section, not [Interface]")
		}
		return p.errorf(key, "unknown key in [Interface]")
	}
	return nil
}

// lowerKey returns key in lower case; a key this parser knows, in any
// spelling, as a constant (a file of 100,000 peers has 200,000 of them).
func lowerKey(key string) string {
	for _, k := range [...]string{"publickey", "allowedips", "endpoint", "presharedkey", "persistentkeepalive", "privatekey", "address", "listenport", "mtu"} {
		if strings.EqualFold(key, k) {
			return k
		}
	}
	return strings.ToLower(key)
}

func isPeerKey(key string) bool {
	switch strings.ToLower(key) {
	case "publickey", "presharedkey", "allowedips", "endpoint", "persistentkeepalive":
		return true
	}
	return false
}

func (p *parser) peerKey(key, value string) error {
	switch lowerKey(key) {
	case "publickey":
		k, err := meshkey.ParsePublic(value)
		if err != nil {
			return p.wrap(key, err)
		}
		if at, dup := p.peerAt[k]; dup && at != p.peerLine {
			return p.errorf(key, "peer %s is also the [Peer] at line %d", k.Short(), at)
		}
		if p.peerAt == nil {
			p.peerAt = make(map[meshkey.Public]int)
		}
		p.peerAt[k] = p.peerLine
		p.peer.PublicKey = k
		p.nKeys++
		if p.track {
			p.keysAt = append(p.keysAt, keyAt{line: p.line, key: key, pub: k})
		}
	case "presharedkey":
		k, err := meshkey.ParsePrivate(value) // never echoes the key
		if err != nil {
			return p.wrap(key, errors.New(strings.Replace(err.Error(), "private key", "preshared key", 1)))
		}
		p.peer.PresharedKey = k
	case "allowedips":
		return p.list(key, value, func(s string) error {
			pfx, err := parsePrefix(s)
			if err != nil {
				return p.errorf(key, "%q is not an IP prefix", s)
			}
			m := pfx.Masked()
			if at, dup := p.owner[m]; dup && at != p.peerLine {
				return p.errorf(key, "%v is also in the [Peer] at line %d; WireGuard routes a prefix to one peer", m, at)
			}
			if p.owner == nil {
				p.owner = make(map[netip.Prefix]int)
			}
			p.owner[m] = p.peerLine
			p.peer.AllowedIPs = append(p.peer.AllowedIPs, pfx)
			if p.track {
				p.pfxAt = append(p.pfxAt, keyAt{line: p.line, item: p.item, key: key})
			}
			return nil
		})
	case "endpoint":
		ap, err := parseEndpoint(value)
		if err != nil {
			return p.wrap(key, err)
		}
		if _, err := netip.ParseAddrPort(value); err != nil {
			p.resolved = true // a host name
		}
		p.peer.Endpoint = ap
	case "persistentkeepalive":
		if strings.EqualFold(value, "off") {
			p.peer.PersistentKeepalive = 0
			return nil
		}
		n, err := strconv.ParseUint(value, 10, 16)
		if err != nil {
			return p.errorf(key, "%q is not a number of seconds (0-65535) or \"off\"", value)
		}
		p.peer.PersistentKeepalive = time.Duration(n) * time.Second
	default:
		if strings.EqualFold(key, "address") || strings.EqualFold(key, "privatekey") || strings.EqualFold(key, "listenport") || strings.EqualFold(key, "mtu") {
			return p.errorf(key, "belongs in the [Interface] section, not [Peer]")
		}
		return p.errorf(key, "unknown key in [Peer]")
	}
	return nil
}

// list calls f for each comma-separated item of value. An empty value is an
// empty list, as in wg; an empty item is an error.
func (p *parser) list(key, value string, f func(string) error) error {
	if value == "" {
		return nil
	}
	for item := range strings.SplitSeq(value, ",") {
		p.item++
		item = strings.TrimSpace(item)
		if item == "" {
			return p.errorf(key, "empty item in the comma-separated list")
		}
		if err := f(item); err != nil {
			return err
		}
	}
	return nil
}

// parsePrefix parses "10.0.0.1/24" or a bare address, which means the host
// alone (/32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if pfx.Addr().Zone() != "" {
			return netip.Prefix{}, errors.New("zone not allowed")
		}
		return pfx, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("zone not allowed")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parseEndpoint parses IP:port, [IPv6]:port or HOST:port. A host name is
// resolved once, now (wg-quick's `wg setconf` does the same): the node
// keeps the address, and a reload resolves the name again.
func parseEndpoint(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err == nil {
		if ap.Port() == 0 {
			return netip.AddrPort{}, fmt.Errorf("%q has port 0", s)
		}
		if ap.Addr().Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("%q: zones are not supported", s)
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, portText, found := strings.Cut(s, ":")
	if !found || host == "" || strings.ContainsAny(host, "[]:") || strings.Contains(portText, ":") {
		return netip.AddrPort{}, fmt.Errorf("%q is not IP:port, [IPv6]:port or host:port", s)
	}
	port, perr := strconv.ParseUint(portText, 10, 16)
	if perr != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, portText)
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	addrs, rerr := lookupHost(ctx, host)
	if rerr != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: cannot resolve host %q: %v", s, host, rerr)
	}
	for _, a := range addrs {
		if a = a.Unmap(); a.IsValid() && a.Zone() == "" {
			return netip.AddrPortFrom(a, uint16(port)), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("%q: host %q has no address", s, host)
}

// resolveTimeout bounds the look-up of an Endpoint's host name.
const resolveTimeout = 10 * time.Second

// lookupHost resolves an Endpoint's host name (tests replace it, so that
// no test asks a DNS server).
var lookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}
