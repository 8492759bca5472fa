@scenario-20
Feature: Scenario 20 - port contention and an unavailable Docker
  On a shared server other processes take ports and Docker can go away. AIMA must fail
  fast with a clear message, record "failed", clean up, and leak nothing over repeated
  failures.

  Background:
    Given a running AIMA daemon
    And a registered model "port-test-model"
    And a service "contended" for model "port-test-model"

  Scenario: 1. A port held by an external process gives a clear error, fast
    Given an external process holds the port of service "contended"
    When I start service "contended" and wait
    Then the start fails within 1000 ms
    And the error names the port of service "contended" and the blocking process
    And the start of service "contended" was tried 1 time

  Scenario: 2. After a port conflict the service is "failed", not stuck
    Given an external process holds the port of service "contended"
    When I start service "contended" and wait
    Then service "contended" is "failed" with a reason mentioning "already in use"

  Scenario: 3. After the failure no container is left
    Given a foreign container publishes the port of service "contended"
    When I start service "contended" and wait
    Then the start fails
    And the error names the port of service "contended" and the foreign container
    And no container of this run is left

  Scenario: 4a. Docker refusing connections gives a clear error, not a hang
    Given the daemon is restarted with DOCKER_HOST "tcp://127.0.0.1:9"
    When I start service "contended" and wait
    Then the start fails within 2000 ms
    And the error says Docker at "tcp://127.0.0.1:9" is unreachable
    And service "contended" is "failed" with a reason mentioning "connection refused"

  Scenario: 4b. An invalid Docker address gives a clear error at once
    Given the daemon is restarted with DOCKER_HOST "tcp://127.0.0.1:99999"
    When I start service "contended" and wait
    Then the start fails within 2000 ms
    And the error says Docker at "tcp://127.0.0.1:99999" is unreachable
    And service "contended" is "failed" with a reason mentioning "invalid port number"

  Scenario: 5. The final error lists the reason of every retry attempt
    Given the daemon is restarted with DOCKER_HOST "tcp://127.0.0.1:9"
    When I start service "contended" and wait
    Then the error lists 3 attempts, each with its reason

  Scenario: 6. service stop works on a failed service and cleans up
    Given an external process holds the port of service "contended"
    And I start service "contended" and wait
    When the external process releases the port
    And I stop service "contended"
    Then service "contended" is "stopped"
    And the port of service "contended" is free on the host
    And no container of this run is left

  Scenario: 7. Three start/fail cycles leak no container and no port
    Given an external process holds the port of service "contended"
    When I start service "contended" 3 times while the port is held
    Then every start of service "contended" failed on its port
    And no container of this run is left
    And service "contended" still holds exactly one port
    And no other port of the daemon's range is in use
    When the external process releases the port
    And I start service "contended" and wait
    Then service "contended" is "running" on its port

  Scenario: 8. Docker refusing a start for a passing reason is retried and leaves exactly one container
    Given Docker refuses the next container start with a transient error
    When I start service "contended" and wait
    Then service "contended" is "running"
    And the start of service "contended" was tried 2 times
    And exactly 1 container of this run is left

  Scenario: 9. Docker refusing a start for good fails it at once and leaves no container
    Given Docker refuses the next container start with a permanent error
    When I start service "contended" and wait
    Then the start fails
    And service "contended" is "failed" with a reason mentioning "executable file not found"
    And the start of service "contended" was tried 1 time
    And exactly 0 containers of this run are left

  Scenario: 10. A daemon killed between creating and starting a container leaves nothing behind
    When the daemon is killed between creating and starting the container of service "contended"
    And I start the daemon again
    Then service "contended" is "failed" with a reason mentioning "the daemon stopped during the start"
    And exactly 0 containers of this run are left
