"""The dispatchd test harness, shared by tests/e2e, tests/failure and
tests/ha (imported as "harness": tests/pytest.ini puts tests/ on sys.path).

  ddtest       where the binaries are (DISPATCHD_BUILD), a private
               redis-server (RedisProc, RedisServer), the real agent with a
               generated config (render_config, Agent), the socket client
               (Client, request, requests), the results stream
               (read_results, result_problems), wait_for/stays (polling with
               a deadline, never a bare sleep), pid_alive, run
  restartable  RestartableAgent: an agent killed and started again under the
               same name, config and directory (tests/failure, tests/ha)
  invariants   the read-only checker of a namespace in Redis run after every
               failure scenario (its docstring and tests/README.md list the
               invariants)
  scripts      the agent's Lua scripts exactly as agent/scripts.c has them
               (tests/e2e/test_scripts.py)

Every process a test starts is ended by its PID, never by name.
"""
