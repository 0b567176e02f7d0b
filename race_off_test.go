//go:build !race

package sshmesh_test

// raceEnabled: the race detector's shadow memory makes RSS meaningless.
const raceEnabled = false
