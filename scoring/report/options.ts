/** Options of renderReport and writeReport. */
export interface ReportOptions {
  /**
   * Class names by index for the per-class section. Default: the names in summary.perClass,
   * else the names the records' top-5 lists give each class.
   */
  readonly classNames?: readonly string[];
  /** How many of the worst classes to list. Default: 20. */
  readonly worstClasses?: number;
  /** The label check's diagnosis in words (queue/plan-label-check.ts), shown in its own section. Default: none. */
  readonly labelCheck?: string;
  /** The page's title. Default: "googlenet-eval report". */
  readonly title?: string;
}
