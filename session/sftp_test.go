//go:build linux

package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// sftpPacket frames an SFTP packet: uint32 length, type, payload.
func sftpPacket(typ byte, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(1+len(payload)))
	return append(append(b, typ), payload...)
}

func readSFTPPacket(t *testing.T, r io.Reader) (byte, []byte) {
	t.Helper()
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		t.Fatalf("read sftp length: %v", err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read sftp packet: %v", err)
	}
	return b[0], b[1:]
}

func TestSFTPSubsystem(t *testing.T) {
	u := testUser(t)
	path, err := findSFTPServer("")
	if err != nil {
		testkit.NeedBinary(t, "/usr/lib/openssh/sftp-server", "openssh-sftp-server")
	}
	toServer, clientW := io.Pipe()
	clientR, fromServer := io.Pipe()
	p, err := start(t.Context(), Request{User: u.Name, Subsystem: "sftp", Stdin: toServer, Stdout: fromServer}, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	go func() { p.Wait(); fromServer.Close() }()

	// SSH_FXP_INIT version 3 → SSH_FXP_VERSION 3.
	go clientW.Write(sftpPacket(1, binary.BigEndian.AppendUint32(nil, 3)))
	typ, body := readSFTPPacket(t, clientR)
	if typ != 2 || binary.BigEndian.Uint32(body) != 3 {
		t.Fatalf("reply type %d body %x, want SSH_FXP_VERSION 3", typ, body)
	}
	// SSH_FXP_REALPATH "." → the home directory: the server runs there.
	req := binary.BigEndian.AppendUint32(nil, 7)
	req = binary.BigEndian.AppendUint32(req, 1)
	req = append(req, '.')
	go clientW.Write(sftpPacket(16, req))
	typ, body = readSFTPPacket(t, clientR)
	if typ != 104 || len(body) < 12 {
		t.Fatalf("reply type %d body %q, want SSH_FXP_NAME", typ, body)
	}
	nameLen := binary.BigEndian.Uint32(body[8:])
	if name := string(body[12 : 12+nameLen]); name != u.Home {
		t.Errorf("realpath . = %q, want %q", name, u.Home)
	}
	// It runs as the user.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("Uid:\t%s\t%s\t%s\t%s\n", u.Uid, u.Uid, u.Uid, u.Uid); !strings.Contains(string(status), want) {
		t.Errorf("sftp-server (%s) status lacks %q", path, want)
	}
	if err := p.Signal("TERM"); err == nil {
		t.Error("Signal to a subsystem = nil, want refused as sshd")
	}
	clientW.Close()
	done := make(chan Exit)
	go func() { e, _ := p.Wait(); done <- e }()
	select {
	case e := <-done:
		if e != (Exit{}) {
			t.Errorf("exit = %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sftp-server did not exit on EOF")
	}
}

func TestSubsystemErrors(t *testing.T) {
	me, err := currentUser()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(t.Context(), Request{User: me.Name, Subsystem: "netconf"})
	var ce *ClientError
	if !errors.Is(err, ErrUnknownSubsystem) || !errors.As(err, &ce) {
		t.Errorf("unknown subsystem: err = %v", err)
	}
	_, err = Start(t.Context(), Request{User: me.Name, Subsystem: "sftp", SFTPServer: "/nonexistent/sftp-server"})
	if !errors.Is(err, ErrNoSFTPServer) {
		t.Errorf("missing sftp-server: err = %v", err)
	}
	if _, err := Start(t.Context(), Request{User: me.Name, Subsystem: "sftp", Command: "id"}); err == nil {
		t.Error("Subsystem with Command: err = nil")
	}
}
