# frozen_string_literal: true

require "English"
require "fileutils"
require "rbconfig"
require "securerandom"
require "tmpdir"

# Separately started processes (not forks) and names that clean up after
# themselves.
module SpawnHelpers
  LIB = File.expand_path("../../lib", __dir__)

  # Runs +script+ in a new Ruby process (Process.spawn through IO.popen)
  # that has required numo/shared; returns its standard output.
  def run_ruby(script)
    out = IO.popen([RbConfig.ruby, "-I", LIB, "-rnumo/shared", "-e", script], err: %i[child out], &:read)
    raise "ruby exited with #{$CHILD_STATUS.exitstatus}: #{out}" unless $CHILD_STATUS.success?

    out
  end

  # Runs +code+ with Debian's python3 (which has numpy); returns stdout.
  def run_python(code)
    out = IO.popen(["/usr/bin/python3", "-c", code], err: %i[child out], &:read)
    raise "python3 exited with #{$CHILD_STATUS.exitstatus}: #{out}" unless $CHILD_STATUS.success?

    out
  end

  # A fresh segment name, removed after the example if it still exists.
  def segment_name
    name = "numo-spec-#{Process.pid}-#{SecureRandom.hex(4)}"
    (@segment_names ||= []) << name
    name
  end

  def remove_spec_segments
    (@segment_names || []).each { |name| FileUtils.rm_f("/dev/shm/#{name}") }
  end
end
