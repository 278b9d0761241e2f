"""The developer's measurements: benchmarks (`fps`: this machine; `aarch64`: instructions on an emulated Pi 5) and
meters (keyframes, lag, soak, engine timing, costs). They import the server and harness/, never tests/."""
