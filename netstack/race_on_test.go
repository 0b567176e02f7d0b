//go:build race

package netstack

// raceEnabled: the race detector slows the data path about 20×.
const raceEnabled = true
