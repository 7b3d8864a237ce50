"""The commands: each subcommand of `harness` as a module on top of the core and the plugins.

`setup` is what they share (cache folder, process state and device, plugin instantiation, model opening, suite
groups); `run`, `analyze`, `estimate`, `recipe`, `leaderboard`, `compare` (and `check`) and `reference_train` are one
command each. Nothing in the core (`harness.*` outside this package) or in the plugins imports from here.
"""
