@scenario-06
Feature: Scenario 06 - lifecycle stress: container churn
  An operator restarts one service five times in a row. Every restart must give a clean
  container, the status must be right after every operation, the service must keep its
  port, and nothing may be left over at the end.

  Background:
    Given a running AIMA daemon
    And a registered model "churn-model"
    And a service "churn" for model "churn-model"

  Scenario: 1. The service starts and stops 5 times in sequence without errors
    When I start and stop service "churn" 5 times
    Then every start and every stop of service "churn" succeeded

  Scenario: 2. Each restart creates a clean container
    When I start and stop service "churn" 5 times
    Then each start of service "churn" ran in a new container
    And no container of service "churn" outlived its stop

  Scenario: 3. The status is right after each operation
    When I start and stop service "churn" 5 times
    Then service "churn" was "running" after every start and "stopped" after every stop

  Scenario: 4. No orphan container is left after the final stop
    When I start and stop service "churn" 5 times
    Then no container of this run is left

  Scenario: 5. The service keeps the same port across restarts
    When I start and stop service "churn" 5 times
    Then service "churn" used the same port in every cycle
    And the port of service "churn" is free on the host

  Scenario: 6. A stop returns only once the port is free, even when the engine takes its time to exit
    Given a running service "slow" for model "churn-model" with env "STUB_STOP_DELAY_MS=1500"
    When I stop service "slow"
    Then the port of service "slow" is free on the host
    And service "slow" is "stopped"
    And exactly 0 containers of this run are left

  Scenario: 7. Each container is made as the contract says
    Given a registered local model "weights"
    And a running service "spec" for model "weights"
    Then the container of service "spec" is made as the contract says
    And the model of service "spec" is mounted read-only
