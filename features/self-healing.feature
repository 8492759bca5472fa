@self-healing
Feature: Self-healing services - restart policies with crash-loop back-off
  An unattended GPU host must recover from a crashed engine without a person, through
  AIMA's own start pipeline (same port, fresh container, GPU admission), and must say
  clearly when it gives up. The back-off here starts at 1 s (AIMA_RESTART_BACKOFF=1s)
  instead of 10 s, so the doubling is seen in seconds; its shape is the same.

  Background:
    Given a running AIMA daemon
    And the daemon is restarted with AIMA_RESTART_BACKOFF=1s
    And a registered model "healing-model"

  Scenario: 1. An engine that crashes once runs again on the same port after the first back-off
    Given a running service "healer" for model "healing-model"
    When the engine of service "healer" is killed with docker
    Then within 2000 ms service "healer" is "backoff" with a reason mentioning "restart 1 of 5 in 1s"
    And within 6000 ms service "healer" is "running" with a reason mentioning "engine is healthy"
    And service "healer" is "running" on its port
    And service "healer" answers inference requests
    And service "healer" has 1 restart
    And the restart of service "healer" waited out its back-off
    And exactly 1 container of this run is left

  Scenario: 2. A container removed with docker rm -f behind AIMA's back is restarted
    Given a running service "healer" for model "healing-model"
    When someone removes the container of service "healer" with docker
    Then within 6000 ms service "healer" is "running" with a reason mentioning "engine is healthy"
    And service "healer" is "running" on its port
    And service "healer" has 1 restart
    And exactly 1 container of this run is left

  Scenario: 3. An engine that crashes after every start ends failed after MAX restarts
    Given a running service "crasher" for model "healing-model" with env "STUB_CRASH_AFTER_SECS=1" and restart policy "on-failure:3"
    Then within 30000 ms service "crasher" is "failed" with a reason mentioning "gave up after 3 restarts: container exited with code 3 while running"
    And the back-offs of service "crasher" were "1s, 2s, 4s", each waited out
    And service "crasher" has 3 restarts
    And no container of this run is left

  Scenario: 4. A service in back-off is stopped cleanly and its restart never comes
    Given the daemon is restarted with AIMA_RESTART_BACKOFF=2s
    And a running service "waiting" for model "healing-model" with restart policy "on-failure:3"
    When the engine of service "waiting" is killed with docker
    Then within 2000 ms service "waiting" is "backoff" with a reason mentioning "restart 1 of 3 in 2s"
    When I stop service "waiting"
    Then service "waiting" stays "stopped" with no container for 3500 ms
    And the port of service "waiting" is free on the host
    And service "waiting" has 0 restarts

  Scenario: 5. The daemon SIGKILLed during a back-off resumes it after it starts again
    Given the daemon is restarted with AIMA_RESTART_BACKOFF=3s
    And a running service "survivor" for model "healing-model"
    When the engine of service "survivor" is killed with docker
    Then within 2000 ms service "survivor" is "backoff" with a reason mentioning "restart 1 of 5 in 3s"
    When I send SIGKILL to the daemon
    And I start the daemon again
    Then within 10000 ms service "survivor" is "running" with a reason mentioning "engine is healthy"
    And service "survivor" is "running" on its port
    And the restart of service "survivor" waited out its back-off
    And service "survivor" has 1 restart
    And exactly 1 container of this run is left

  Scenario: 6. A restart that finds the engine image gone is not retried
    Given the engine image is a copy tagged for this scenario
    And a running service "orphaned" for model "healing-model"
    When the engine image of this scenario is removed
    And the engine of service "orphaned" is killed with docker
    Then within 8000 ms service "orphaned" is "failed" with a reason mentioning "is not on this host"
    And the events of service "orphaned" show 1 back-off
    And service "orphaned" has 1 restart
    And no container of this run is left

  @kill-during-restart
  Scenario: 7. A daemon SIGKILLed during an automatic restart leaves the service to its policy, ten times over
    Given the daemon is restarted with AIMA_RESTART_BACKOFF=100ms
    And a running service "phoenix" for model "healing-model" with env "STUB_START_DELAY_MS=300" and restart policy "always"
    When 10 times the engine of service "phoenix" is killed and the daemon is SIGKILLed within 50 ms of the automatic restart
    Then service "phoenix" is "running" on its port
    And service "phoenix" answers inference requests
    And exactly 1 container of this run is left
