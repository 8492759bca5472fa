@daemon-restarts
Feature: Daemon restarts between starts - written by QA from existing steps only
  An operator upgrades AIMA twice while a service runs, then stops and starts it again.
  The service must be adopted each time, keep its container and port, and stop cleanly.
  This feature uses only step phrases that `harness steps` lists; it needed no Rust.

  Background:
    Given a running AIMA daemon
    And a registered model "restart-model"

  Scenario: 1. A running service survives two daemon restarts and starts again afterwards
    Given a running service "kept" for model "restart-model"
    When I send SIGTERM to the daemon
    And the daemon exits with code 0
    And I start the daemon again
    And I send SIGTERM to the daemon
    And the daemon exits with code 0
    And I start the daemon again
    Then service "kept" is "running" in the same container
    And service "kept" is "running" on its port
    When I stop service "kept"
    Then the port of service "kept" is free on the host
    And exactly 0 containers of this run are left
    When I start service "kept" and wait
    Then service "kept" answers inference requests
    And exactly 1 container of this run is left
