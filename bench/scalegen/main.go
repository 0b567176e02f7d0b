// Command scalegen writes the files of bench/run --scale: a server's
// wg-quick file with N peers (no endpoints, one /32 each) and a policy
// with one node per peer, the variants a reload applies, a one-peer
// server beside it, the same peers as a `wg setconf` file for
// wireguard-go, and the client's own wg-quick file (it is peer 0).
//
//	scalegen -dir DIR -n 100000 -port 51820
//
// Files in DIR:
//
//	server.conf, policy.hujson        the N-peer server
//	server-peer.conf                  server.conf with one peer's address changed
//	policy-rule.hujson                policy.hujson with one rule changed
//	one.conf, one.hujson              a server whose only peer is the client
//	wg.conf                           server.conf's key and peers for `wg setconf`
//	client.conf                       the client (peer 0), endpoint 127.0.0.1:PORT
//	client-K.conf                     with -clients N: peer K as a client, K < N
//
// Keys are X25519 from crypto/ecdh, made on every CPU.
package main

import (
	"bufio"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
)

// owners is how many distinct owners the nodes have, and rules how many
// rules the policy has (one per owner, on the first owners).
const (
	owners = 1000
	rules  = 100
)

type keyPair struct{ priv, pub string }

func main() {
	dir := flag.String("dir", "", "output `dir` (required)")
	n := flag.Int("n", 10000, "number of peers")
	port := flag.Int("port", 51820, "the servers' UDP `port` (the one-peer server takes port+1)")
	clients := flag.Int("clients", 0, "also write client-K.conf for the first `N` peers (each may log in: rules cover their owners)")
	flag.Parse()
	if *dir == "" || *n < 1 || *n > 4_000_000 || *clients < 0 || *clients > min(*n, rules) {
		flag.Usage()
		os.Exit(2)
	}
	keys := genKeys(*n + 2) // server, one-peer server, peers
	server, one, peers := keys[0], keys[1], keys[2:]
	// Peer i has 100.64.0.0 + 256 + i (100.64.0.1 is the server).
	addr := func(i int) netip.Addr {
		v := uint32(100<<24|64<<16) + 256 + uint32(i)
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	const serverAddr = "100.64.0.1"

	writeConf := func(name string, wgQuick bool, key keyPair, port int, peer func(w *bufio.Writer)) {
		write(filepath.Join(*dir, name), func(w *bufio.Writer) {
			fmt.Fprintf(w, "[Interface]\nPrivateKey = %s\n", key.priv)
			if wgQuick {
				fmt.Fprintf(w, "Address = %s/32\n", serverAddr)
			}
			fmt.Fprintf(w, "ListenPort = %d\n", port)
			peer(w)
		})
	}
	allPeers := func(changed int) func(w *bufio.Writer) {
		return func(w *bufio.Writer) {
			for i, p := range peers {
				a := addr(i)
				if i == changed {
					a = addr(len(peers) + 1)
				}
				fmt.Fprintf(w, "\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\n", p.pub, a)
			}
		}
	}
	writeConf("server.conf", true, server, *port, allPeers(-1))
	writeConf("server-peer.conf", true, server, *port, allPeers(len(peers)-1))
	writeConf("wg.conf", false, server, *port, allPeers(-1))
	writeConf("one.conf", true, one, *port+1, func(w *bufio.Writer) {
		fmt.Fprintf(w, "\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\n", peers[0].pub, addr(0))
	})
	write(filepath.Join(*dir, "client.conf"), func(w *bufio.Writer) {
		fmt.Fprintf(w, "[Interface]\nPrivateKey = %s\nAddress = %s/32\n", peers[0].priv, addr(0))
		fmt.Fprintf(w, "\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\nEndpoint = 127.0.0.1:%d\n", server.pub, serverAddr, *port)
	})
	for k := range *clients {
		write(filepath.Join(*dir, fmt.Sprintf("client-%d.conf", k)), func(w *bufio.Writer) {
			fmt.Fprintf(w, "[Interface]\nPrivateKey = %s\nAddress = %s/32\n", peers[k].priv, addr(k))
			fmt.Fprintf(w, "\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\nEndpoint = 127.0.0.1:%d\n", server.pub, serverAddr, *port)
		})
	}
	write(filepath.Join(*dir, "client-one.conf"), func(w *bufio.Writer) {
		fmt.Fprintf(w, "[Interface]\nPrivateKey = %s\nAddress = %s/32\n", peers[0].priv, addr(0))
		fmt.Fprintf(w, "\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\nEndpoint = 127.0.0.1:%d\n", one.pub, serverAddr, *port+1)
	})

	writePolicy := func(name string, self keyPair, nodes []keyPair, rules, changedRule int) {
		write(filepath.Join(*dir, name), func(w *bufio.Writer) {
			fmt.Fprintf(w, "{\n  \"nodes\": {\n    \"server\": {\"key\": %q, \"tags\": [\"tag:server\"]},\n", self.pub)
			for i, p := range nodes {
				fmt.Fprintf(w, "    \"c%d\": {\"key\": %q, \"owner\": \"u%d@example.com\"},\n", i, p.pub, i%owners)
			}
			w.WriteString("  },\n  \"tagOwners\": {\"tag:server\": [\"u0@example.com\"]},\n  \"ssh\": [\n")
			for r := range rules {
				users := `"root"`
				if r == changedRule {
					users = `"root", "deploy"`
				}
				fmt.Fprintf(w, "    {\"action\": \"accept\", \"src\": [\"u%d@example.com\"], \"dst\": [\"tag:server\"], \"users\": [%s]},\n", r, users)
			}
			w.WriteString("  ],\n}\n")
		})
	}
	writePolicy("policy.hujson", server, peers, rules, -1)
	writePolicy("policy-rule.hujson", server, peers, rules, rules-1)
	writePolicy("one.hujson", one, peers[:1], 1, -1) // its one node's owner's rule
}

// genKeys makes n X25519 key pairs, base64 as wg prints them.
func genKeys(n int) []keyPair {
	out := make([]keyPair, n)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := base64.StdEncoding.EncodeToString
			for i := w; i < n; i += workers {
				k, err := ecdh.X25519().GenerateKey(rand.Reader)
				if err != nil {
					log.Fatal(err)
				}
				out[i] = keyPair{e(k.Bytes()), e(k.PublicKey().Bytes())}
			}
		}()
	}
	wg.Wait()
	return out
}

// write creates path (0600: some hold private keys) with what fill writes.
func write(path string, fill func(w *bufio.Writer)) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		log.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fill(w)
	if err := w.Flush(); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}
