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

  # How long a spawned process may run before it is killed (a hang in one
  # fails its example instead of stopping the suite).
  SPAWN_TIMEOUT = 120

  # Runs +script+ in a new Ruby process (Process.spawn through IO.popen)
  # that has required numo/shared; returns its standard output and error.
  # Raises if it fails, or is still running after SPAWN_TIMEOUT seconds.
  def run_ruby(script)
    output, status = SpawnHelpers.capture_within(SPAWN_TIMEOUT,
                                                 [RbConfig.ruby, "-I", LIB, "-rnumo/shared", "-e", script])
    raise "ruby was still running after #{SPAWN_TIMEOUT} s and was killed: #{script}" unless status
    raise "ruby exited with #{status.exitstatus.inspect} (#{status}): #{output}" unless status.success?

    output
  end

  # Like run_ruby, for code that could block: the process is killed
  # (SIGKILL, which it cannot ignore) if it has not finished within
  # +seconds+, and this raises. Returns its standard output and error.
  def run_ruby_within(seconds, script)
    output, status = SpawnHelpers.capture_within(seconds, [RbConfig.ruby, "-I", LIB, "-rnumo/shared", "-e", script])
    raise "ruby was still running after #{seconds} s and was killed: #{script}" unless status

    output
  end

  # Output (stdout and stderr) and exit status of the command +argv+ (run
  # with IO.popen +options+); the status is nil if the command was still
  # running after +seconds+ and was killed (SIGKILL).
  def self.capture_within(seconds, argv, **options)
    IO.popen(argv, err: %i[child out], **options) do |io|
      reader = Thread.new { io.read }
      finished = reader.join(seconds)
      Process.kill(:KILL, io.pid) unless finished
      [reader.value, finished]
    end => [output, finished]
    [output, finished && $CHILD_STATUS]
  end

  # Runs +code+ with Debian's python3 (which has numpy); returns stdout.
  def run_python(code)
    run_command("/usr/bin/python3", "-c", code)
  end

  # Output (stdout and stderr) of a command that must succeed.
  def run_command(*argv)
    out = IO.popen(argv, err: %i[child out], &:read)
    raise "#{File.basename(argv[0])} exited with #{$CHILD_STATUS.exitstatus}: #{out}" unless $CHILD_STATUS.success?

    out
  end

  # What the names of this run's segments start with: the specs list and
  # sweep only these (Numo::Shared.segments(prefix:), sweep(prefix:)).
  def segment_prefix
    "numo-spec-#{Process.pid}-"
  end

  # A fresh segment name, removed after the example if it still exists.
  def segment_name
    name = "#{segment_prefix}#{SecureRandom.hex(4)}"
    (@segment_names ||= []) << name
    name
  end

  def remove_spec_segments
    (@segment_names || []).each { |name| FileUtils.rm_f("/dev/shm/#{name}") }
  end
end
