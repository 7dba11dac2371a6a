# frozen_string_literal: true

require "numo/parallel" # numo/shared, the parallel gem and Numo::Parallel: the suite uses all three
require "timeout"
require_relative "support/gc_helpers"
require_relative "support/process_helpers"
require_relative "support/resource_helpers"
require_relative "support/spawn_helpers"
require_relative "support/foreign_segment"

RSpec.configure do |config|
  config.include GcHelpers
  config.include ProcessHelpers
  config.include ResourceHelpers
  config.include SpawnHelpers
  config.after { remove_spec_segments }
  # No example may hang the suite: after 5 minutes it fails (and says so).
  config.around { |example| Timeout.timeout(300, Timeout::Error, "example still running after 300 s", &example) }
  config.before(:suite) { ForeignSegment.plant }
  config.after(:suite) { ForeignSegment.check_and_remove }
  config.disable_monkey_patching!
  config.order = :random
  Kernel.srand config.seed
  config.expect_with(:rspec) { |c| c.syntax = :expect }
end
