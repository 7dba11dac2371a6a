# frozen_string_literal: true

# Counting what the process holds: mappings of shared arrays and descriptors.
module ResourceHelpers
  # Sizes in bytes of this process's mappings whose path contains +name+.
  # (The kernel may merge adjacent mappings of one file into one line, so
  # sizes are exact where line counts are not.)
  def mapping_sizes(name)
    File.foreach("/proc/self/maps").filter_map do |line|
      next unless line.include?(name)

      from, to = line[/\A\h+-\h+/].split("-").map(&:hex)
      to - from
    end
  end

  # Mappings of this gem's anonymous segments in this process (one memfd
  # each, so they never merge).
  def shared_mapping_count
    mapping_sizes("memfd:numo-shared").size
  end

  # Bytes mapped in this process of the memfds that Numo::Parallel workers
  # copied large results into.
  def results_mapped_bytes
    mapping_sizes("memfd:numo-shared-result").sum
  end

  # Bytes mapped of Numo::Parallel's regions for small results.
  def region_mapped_bytes
    mapping_sizes("memfd:numo-shared-region").sum
  end

  # Bytes mapped from this gem's anonymous segments (new_shared arrays and
  # the parent's second mappings of them) in this process.
  def segment_mapped_bytes
    mapping_sizes("memfd:numo-shared (deleted)").sum
  end

  # Everything a Numo::Parallel call could leave behind in this process.
  def residue
    full_gc
    { results: results_mapped_bytes, regions: region_mapped_bytes, segments: segment_mapped_bytes,
      fds: fd_count, receivers: receiver_thread_count, shm: shm_entries_of_this_process }
  end

  # /dev/shm's entries, less those that the specs of other processes (a
  # suite running beside this one) made: their names carry their pid.
  def shm_entries_of_this_process
    Dir.children("/dev/shm").reject do |name|
      (pid = name[/\Anumo-(?:foreign-suite|spec)-(\d+)-/, 1]) && Integer(pid) != Process.pid
    end.sort
  end

  # The residue, once it equals +before+ or after a few tries. Ruby scans
  # the machine stack conservatively, and Ruby 3.3 was seen to keep one
  # array alive through a stale slot of it (once in the suite's runs); a
  # deep call overwrites such slots before the next collection. A real leak
  # stays through every try.
  def settled_residue(before)
    after = residue
    3.times do
      break if after == before

      overwrite_stack(200)
      after = residue
    end
    after
  end

  # The block's value after a full collection, once it equals +expected+
  # or after a few tries, each after overwriting the stack (see
  # settled_residue: a stale stack slot can keep one object alive).
  def settled_value(expected)
    value = nil
    4.times do
      full_gc
      value = yield
      break if value == expected

      overwrite_stack(200)
    end
    value
  end

  # Calls itself +depth+ deep, each level through a C method (Array#sum
  # yields), so that both Ruby's VM stack and the machine stack are written over.
  def overwrite_stack(depth)
    return 0 if depth.zero?

    [depth - 1].sum { |d| overwrite_stack(d) + Array.new(8).size }
  end

  # What is still alive when something was left behind: the shared arrays'
  # classes and shapes.
  def live_shared_arrays
    alive = ObjectSpace.each_object(Numo::NArray).select(&:shared?).map { |a| "#{a.class}#{a.shape}" }
    "shared arrays alive: #{alive.tally}"
  end

  # Mappings of files (memfds, /dev/shm and disk files included); leaves out
  # anonymous memory, which Ruby's heap and malloc grow and shrink on their
  # own. Everything this gem maps is a file.
  def file_mapping_count
    File.foreach("/proc/self/maps").count { |line| line.split(" ", 6)[5].to_s.start_with?("/") }
  end

  # Threads of this process that receive Numo::Parallel results (named
  # numo-shared-results, which the kernel cuts to 15 characters).
  def receiver_thread_count
    Dir.children("/proc/self/task").count do |task|
      File.read("/proc/self/task/#{task}/comm").start_with?("numo-shared-res")
    rescue Errno::ENOENT
      false
    end
  end

  # Open file descriptors of this process.
  def fd_count
    Dir.children("/proc/self/fd").size
  end

  def full_gc
    3.times { GC.start(full_mark: true, immediate_sweep: true) }
  end
end
