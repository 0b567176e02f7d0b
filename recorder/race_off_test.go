//go:build !race

package recorder_test

// raceEnabled: the race detector slows the data path about 20 times.
const raceEnabled = false
