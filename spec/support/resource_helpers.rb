# frozen_string_literal: true

# Counting what the process holds: mappings of shared arrays and descriptors.
module ResourceHelpers
  # Mappings of this gem's anonymous segments in this process.
  def shared_mapping_count
    File.foreach("/proc/self/maps").count { |line| line.include?("memfd:numo-shared") }
  end

  # All mappings of this process.
  def mapping_count
    File.foreach("/proc/self/maps").count
  end

  # Open file descriptors of this process.
  def fd_count
    Dir.children("/proc/self/fd").size
  end

  def full_gc
    3.times { GC.start(full_mark: true, immediate_sweep: true) }
  end
end
