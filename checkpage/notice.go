package checkpage

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// NoticePort is the TCP port on the caller's mesh address that receives
// notices. `sshmesh nc` and `sshmesh proxy` listen on it inside their own
// in-process stack.
const NoticePort = 41022

// maxNotice bounds a notice's size.
const maxNotice = 2048

// Notice tells the caller's node that one of its conns waits for a check:
// the conn whose source port is ConnPort, to the node that sent the notice.
// It travels as one line of JSON on a conn to [NoticePort].
type Notice struct {
	ConnPort uint16 `json:"conn_port"` // the source port of the client's conn the check is for
	URL      string `json:"url"`       // the approval page to open
}

// notify sends the notice for the conn from caller to the caller's node,
// best effort: a caller that is not an sshmesh node just refuses the conn.
func (c *Checker) notify(caller netip.AddrPort, pageURL string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := SendNotice(ctx, c.Dial, caller.Addr(), Notice{ConnPort: caller.Port(), URL: pageURL})
	if err != nil {
		c.logger().Debug("check notice not delivered", "addr", caller.String(), "err", err)
	}
}

// SendNotice sends n to NoticePort on to, dialed with dial.
func SendNotice(ctx context.Context, dial func(ctx context.Context, network, address string) (net.Conn, error), to netip.Addr, n Notice) error {
	conn, err := dial(ctx, "tcp", netip.AddrPortFrom(to, NoticePort).String())
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	_, err = conn.Write(append(b, '\n'))
	return err
}

// ReadNotice reads one notice from r (at most 2 KiB).
func ReadNotice(r io.Reader) (Notice, error) {
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxNotice), maxNotice).ReadSlice('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return Notice{}, fmt.Errorf("checkpage: notice: %w", err)
	}
	var n Notice
	if err := json.Unmarshal(line, &n); err != nil {
		return Notice{}, fmt.Errorf("checkpage: notice: %w", err)
	}
	return n, nil
}

// Validate reports whether n may be acted on by a node whose conn from
// source port connPort reached server: the notice must name that conn, and
// its URL must be an approval page on server itself (plain http, no user
// info, path /check/TOKEN), so a notice cannot make the client open
// anything else.
func (n Notice) Validate(server netip.Addr, connPort uint16) error {
	if n.ConnPort != connPort {
		return fmt.Errorf("checkpage: notice names conn port %d, not %d", n.ConnPort, connPort)
	}
	u, err := url.Parse(n.URL)
	if err != nil {
		return fmt.Errorf("checkpage: notice URL: %w", err)
	}
	if u.Scheme != "http" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("checkpage: notice URL %q is not a plain http URL", n.URL)
	}
	host, err := netip.ParseAddr(u.Hostname())
	if err != nil || host.Unmap() != server.Unmap() {
		return fmt.Errorf("checkpage: notice URL %q is not on the server %s", n.URL, server)
	}
	if p := u.Port(); p != "" {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return fmt.Errorf("checkpage: notice URL %q: bad port", n.URL)
		}
	}
	tok, ok := strings.CutPrefix(u.EscapedPath(), "/check/")
	if !ok || len(tok) != 22 || strings.Trim(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		return fmt.Errorf("checkpage: notice URL %q is not an approval page", n.URL)
	}
	return nil
}
