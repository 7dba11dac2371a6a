# frozen_string_literal: true

require "securerandom"
require_relative "spawn_helpers"

# A named segment that is not the suite's: made before the suite by a process
# that then exits, as a user's producer leaves data for a later reader (so
# its creator is gone, and an unrestricted Numo::Shared.sweep would remove
# it), and checked after the suite. The specs must create, list, sweep and
# unlink only the segments they made: if this one is gone or changed, one of
# them did not.
module ForeignSegment
  extend SpawnHelpers

  NAME = "numo-foreign-suite-#{Process.pid}-#{SecureRandom.hex(4)}".freeze
  VALUES = [42, 43, 44].freeze

  def self.plant
    run_ruby("Numo::Int32.new_shared(3, name: #{NAME.inspect}).store(#{VALUES.inspect})")
  end

  def self.check_and_remove
    unless exist?
      raise "a segment that the suite did not make, /dev/shm/#{NAME}, is gone: a spec removed it, or another " \
            "process of this user did (e.g. another checkout's suite calling Numo::Shared.sweep without prefix:)"
    end

    found = Numo::NArray.open_shared(NAME, readonly: true).to_a
    raise "the suite changed a segment it did not make: #{NAME} holds #{found}" unless found == VALUES
  ensure
    Numo::NArray.unlink_shared(NAME) if exist?
  end

  def self.exist?
    File.exist?("/dev/shm/#{NAME}")
  end
end
