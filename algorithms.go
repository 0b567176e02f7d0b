package sshmesh

import "golang.org/x/crypto/ssh"

// Algorithms lists the SSH algorithms a server offers, most preferred
// first. Host key algorithms follow from [Server.HostKeys].
type Algorithms struct {
	KeyExchanges []string // key exchange methods, e.g. "curve25519-sha256"
	Ciphers      []string // ciphers, e.g. "chacha20-poly1305@openssh.com"
	MACs         []string // MACs (unused with AEAD ciphers), e.g. "hmac-sha2-256-etm@openssh.com"
}

// DefaultAlgorithms returns what a current audit of an SSH server (ssh-audit)
// passes without a warning while staying compatible with OpenSSH 8+, PuTTY,
// Dropbear and Paramiko 2.x: post-quantum hybrid and Curve25519 key
// exchange (no NIST-curve ECDH, no SHA-1), AEAD ciphers first with AES-CTR
// for Paramiko, and encrypt-then-MAC SHA-2 MACs only (no SHA-1, no
// encrypt-and-MAC: Paramiko 2.12 has the -etm@openssh.com MACs).
func DefaultAlgorithms() *Algorithms {
	return &Algorithms{
		KeyExchanges: []string{
			ssh.KeyExchangeMLKEM768X25519,
			ssh.KeyExchangeCurve25519,
			ssh.KeyExchangeDH16SHA512,
		},
		Ciphers: []string{
			ssh.CipherChaCha20Poly1305,
			ssh.CipherAES256GCM,
			ssh.CipherAES128GCM,
			ssh.CipherAES256CTR,
			ssh.CipherAES192CTR,
			ssh.CipherAES128CTR,
		},
		MACs: []string{
			ssh.HMACSHA256ETM,
			ssh.HMACSHA512ETM,
		},
	}
}
