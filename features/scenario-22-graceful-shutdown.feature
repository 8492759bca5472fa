@scenario-22
Feature: Scenario 22 - graceful shutdown and crash safety
  An operator upgrades AIMA in production. SIGTERM must refuse new connections at once,
  let in-flight requests finish, leave engine containers running and the database
  intact; a SIGKILL must not corrupt the database either.

  Background:
    Given a running AIMA daemon
    And a registered model "shutdown-model"

  Scenario: 1. SIGTERM stops accepting new connections at once
    Given a request is in flight
    When I send SIGTERM to the daemon
    Then new connections are refused within 500 ms

  Scenario: 2. In-flight requests complete before the process exits
    Given a request is in flight
    When I send SIGTERM to the daemon
    And the in-flight request finishes sending
    Then the in-flight request completes successfully
    And the daemon exits with code 0

  Scenario: 3. Engine containers keep running after the daemon exits
    Given a running service "kept" for model "shutdown-model"
    When I send SIGTERM to the daemon
    Then the daemon exits with code 0
    And the container of service "kept" is still running

  Scenario: 4. The database is intact after SIGTERM
    When I send SIGTERM to the daemon
    Then the daemon exits with code 0
    And the database passes the integrity check

  Scenario: 5. The daemon restarts cleanly after SIGTERM
    When I send SIGTERM to the daemon
    And the daemon exits with code 0
    And I start the daemon again
    Then model "shutdown-model" is listed

  Scenario: 5b. A service running across the restart is adopted, not restarted
    Given a running service "kept" for model "shutdown-model"
    When I send SIGTERM to the daemon
    And the daemon exits with code 0
    And I start the daemon again
    Then service "kept" is "running" in the same container
    And service "kept" answers inference requests

  Scenario: 6. The database is intact after SIGKILL and keeps acknowledged writes
    Given a registered model "sigkill-model"
    When I send SIGKILL to the daemon
    Then the database passes the integrity check
    When I start the daemon again
    Then model "sigkill-model" is listed
    And the database passes the integrity check
