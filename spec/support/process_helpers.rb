# frozen_string_literal: true

# Running code in a forked child and getting its value (or exception) back.
module ProcessHelpers
  class ChildFailed < StandardError
  end

  # Runs the block in a forked child; returns what it returned, or the
  # exception it raised, as an object. The child skips at_exit handlers.
  def in_child
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      result = begin
        yield
      rescue Exception => e # rubocop:disable Lint/RescueException
        e
      end
      writer.write(Marshal.dump(result))
      writer.close
      exit!(0)
    end
    writer.close
    data = reader.read
    reader.close
    _, status = Process.wait2(pid)
    raise ChildFailed, "child exited with #{status.inspect}" unless status.success?

    Marshal.load(data) # rubocop:disable Security/MarshalLoad
  end

  # Forks one child per block argument and waits for all; raises if any failed.
  def fork_each(items, &block)
    pids = items.map do |item|
      fork do
        block.call(item)
        exit!(0)
      rescue Exception # rubocop:disable Lint/RescueException
        exit!(1)
      end
    end
    statuses = pids.map { |pid| Process.wait2(pid).last }
    failed = statuses.reject(&:success?)
    raise ChildFailed, "children failed: #{failed.inspect}" unless failed.empty?
  end
end
