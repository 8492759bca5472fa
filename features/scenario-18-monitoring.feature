@scenario-18
Feature: Scenario 18 - monitoring a service: progress, logs, events and status
  An operator in production watches a service start, reads its logs, and relies on the
  status: a failed start must say "failed" with a reason, never stay "creating".

  Background:
    Given a running AIMA daemon
    And a registered model "watched-model"

  Scenario: 1. start --wait shows each phase as it happens
    Given a service "watched" for model "watched-model"
    When I start service "watched" and wait
    Then the start output shows the phases cleanup, port_check, image, create, start, health in order
    And the start output ends with service "watched" running

  Scenario: 2. service logs shows the engine's own output
    Given a running service "watched" for model "watched-model"
    Then the logs of service "watched" contain "Uvicorn running on"

  Scenario: 3. The status follows the service: creating, then running
    Given a service "watched" for model "watched-model"
    Then service "watched" is "creating"
    When I start service "watched" and wait
    Then service "watched" is "running"

  Scenario: 4. A failed start turns the service "failed" with its reason
    Given a service "doomed" for model "watched-model" with env "STUB_FAIL=oom"
    When I start service "doomed" and wait
    Then the start fails
    And service "doomed" is "failed" with a reason mentioning "out of GPU memory"
    And the logs of service "doomed" contain "CUDA out of memory"
    And no container of this run is left

  Scenario: 5. Progress events are delivered on the event stream
    Given a service "watched" for model "watched-model"
    When I follow the event stream of service "watched"
    And I start service "watched" and wait
    Then the event stream delivered the phases and the statuses "starting" then "running"

  Scenario: 6. The service list shows every service's current status
    Given a running service "healthy" for model "watched-model"
    And a service "doomed" for model "watched-model" with env "STUB_FAIL=oom"
    When I start service "doomed" and wait
    Then the service list shows "healthy" as "running"
    And the service list shows "doomed" as "failed"

  Scenario: 7. The status over HTTP matches the CLI
    Given a running service "watched" for model "watched-model"
    Then the CLI and the HTTP API report the same status for service "watched"

  Scenario: 8. A container removed behind AIMA's back turns the service "failed" at once
    Given a running service "watched" for model "watched-model" with restart policy "no"
    When someone removes the container of service "watched" with docker
    Then within 1000 ms service "watched" is "failed" with a reason mentioning "killed by signal 9"
    And no container of this run is left

  Scenario: 9. An engine that dies while AIMA waits for its health leaves no container
    Given a service "late" for model "watched-model" with env "STUB_START_DELAY_MS=1500" and "STUB_FAIL=oom"
    When I start service "late" and wait
    Then the start fails
    And the start of service "late" failed in its health phase
    And service "late" is "failed" with a reason mentioning "out of GPU memory"
    And exactly 0 containers of this run are left

  Scenario: 10. With two engines running, each service's logs and events are its own
    Given a registered model "chat-model" from repo "org/chat-7b"
    And a registered model "code-model" from repo "org/code-13b"
    And a running service "chat" for model "chat-model"
    And a running service "code" for model "code-model"
    Then the logs and events of services "chat" and "code" are each their own
