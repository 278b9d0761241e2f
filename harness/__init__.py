"""What the tests and the benchmarks both drive the server with: real server processes, a client's uploads and
/video_feed reader, waiting, the demo's frames, live camera servers.

It imports the server only (tests/test_repo.py checks): never tests/, tools/ or bench/.
"""
