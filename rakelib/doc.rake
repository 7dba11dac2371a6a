# frozen_string_literal: true

require "set" # YARD uses Set without requiring it
require "yard"

# The API docs: `rake doc` writes them to doc/ (options in .yardopts), and
# `rake doc:check` fails when a public object has no docs, or a public method
# no @example. Objects marked @api private or @!visibility private, and
# everything inside them, are not public.
YARD::Rake::YardocTask.new(:doc)

# What doc:check looks at.
module DocCheck
  LIB = File.expand_path("../lib", __dir__)

  # Known gaps in files being rewritten (lib/numo/parallel.rb: the
  # @!method inside the define_method loop is not seen by YARD). Reported,
  # not failed; an entry that is no longer missing fails the check, so
  # that it is taken out of this list.
  KNOWN_GAPS = {}.freeze

  module_function

  # The objects YARD finds in lib/, by path.
  def registry
    YARD::Registry.clear
    YARD::Logger.instance.level = YARD::Logger::ERROR
    YARD.parse(File.join(LIB, "**/*.rb"))
    YARD::Registry.all.to_h { |object| [object.path, object] }
  end

  def hidden?(object)
    return false if object.root?

    object.visibility != :public || object.tag(:api)&.text == "private" || hidden?(object.namespace)
  end

  # Problems with the public objects YARD found.
  def problems(objects)
    objects.values.reject { |object| hidden?(object) }.filter_map do |object|
      if object.docstring.blank? then "#{object.path}: no docs"
      elsif object.type == :method && !object.is_attribute? && !object.has_tag?(:example)
        "#{object.path}: no @example"
      end
    end
  end

  # Modules of this gem (Numo::Shared, Numo::Parallel and theirs, the Rust
  # ones included) that YARD does not know of at all.
  def unseen_modules(objects)
    ObjectSpace.each_object(Module).filter_map do |mod|
      next unless mod.name&.match?(/\ANumo::(Shared|Parallel)\b/)

      "#{mod.name}: not in the docs (defined in Rust? describe it with @!parse)" unless objects.key?(mod.name)
    end
  end

  # Public methods that lib/ defines at run time (define_method included)
  # and YARD does not know of at all.
  def unseen_methods(objects)
    modules = ObjectSpace.each_object(Module).select { |m| m.name&.start_with?("Numo::") }
    modules.flat_map do |mod|
      (own_methods(mod, mod, "#") + own_methods(mod, mod.singleton_class, ".")).filter_map do |path|
        "#{path}: not in the docs (a @!method directive YARD did not see?)" unless objects.key?(path)
      end
    end
  end

  # Paths of the public methods that +holder+ (+mod+ or its singleton class)
  # itself defines in a file of lib/.
  def own_methods(mod, holder, separator)
    holder.public_instance_methods(false).filter_map do |name|
      method = holder.instance_method(name)
      file = method.source_location&.first
      "#{mod.name}#{separator}#{name}" if method.owner == holder && file&.start_with?(LIB)
    end
  end
end

namespace :doc do
  desc "Fail when a public class, module, constant or method has no docs, or a public method no @example"
  task check: :compile do
    require File.join(DocCheck::LIB, "numo/shared")
    objects = DocCheck.registry
    found = (DocCheck.problems(objects) + DocCheck.unseen_modules(objects) + DocCheck.unseen_methods(objects)).uniq
    known, problems = found.sort.partition { |problem| DocCheck::KNOWN_GAPS.key?(problem) }
    closed = DocCheck::KNOWN_GAPS.keys - known
    problems += closed.map { |gap| "no longer missing, take it out of DocCheck::KNOWN_GAPS: #{gap}" }
    abort "API docs missing:\n  #{problems.join("\n  ")}" unless problems.empty?
    warn "API docs: #{known.size} known gaps:\n  #{known.join("\n  ")}" unless known.empty?
    puts "API docs: every public object of lib/ is documented, every public method has an @example"
  end
end
